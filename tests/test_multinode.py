"""SFT on a two-node Ray cluster started on this machine, one training worker on each node."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from trainers.sft import SFTConfig, run_sft

pytestmark = pytest.mark.slow


@pytest.fixture
def two_node_cluster():
    import ray
    from ray.cluster_utils import Cluster

    from services.ray_cluster import worker_env

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                           "object_store_memory": 256 * 2**20})
    cluster.add_node(num_cpus=1, object_store_memory=256 * 2**20)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, runtime_env={"env_vars": worker_env()})
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_sft_spreads_workers_over_two_nodes(two_node_cluster, tiny_model_path, tmp_path):
    import ray

    rows = [{"prompt": f"Question {i}?", "completion": f"Answer {i}."} for i in range(32)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = SFTConfig(num_workers=2, cpus_per_worker=1, zero_stage=2, placement_strategy="STRICT_SPREAD",
                    batch_size=8, epochs=1)
    result = run_sft(cfg, tiny_model_path, data, tmp_path / "run")
    nodes = {json.loads(f.read_text())["rank"]: json.loads(f.read_text())["node_id"]
             for f in Path(result.checkpoint, "ray_workers").glob("rank*.json")}
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(alive) == 2
    assert sorted(nodes) == [0, 1] and set(nodes.values()) == alive  # one worker per node
    assert result.global_step == 2


def test_ppo_spreads_learner_and_rollout_workers_over_two_nodes(two_node_cluster, tiny_model_path, tmp_path):
    """Two learner ranks (one per node, DeepSpeed ZeRO-2 over gloo) and two rollout replicas (one per node)."""
    import ray
    from ray import serve

    from backdoors.datasets import train_prompts
    from reward_models.preference_model import resolve_backbone
    from reward_models.serve import deploy_reward_worker
    from reward_models.serve_config import RewardServeConfig
    from trainers.ppo import PPOConfig, run_ppo

    # An untrained scalar head on the tiny backbone: this test is about placement, not learning.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reward = deploy_reward_worker(resolve_backbone("tiny"), RewardServeConfig(num_cpus_per_replica=0.25, http_port=port))
    cfg = PPOConfig.model_validate({
        "iterations": 2, "prompts_per_iteration": 16, "eval_every": 0, "save_every": 2,
        "rollout": {"num_replicas": 2, "max_replicas_per_node": 1, "num_cpus_per_replica": 0.25,
                    "max_new_tokens": 8, "num_threads": 1},
        "learner": {"num_workers": 2, "cpus_per_worker": 0.5, "placement_strategy": "STRICT_SPREAD",
                    "zero_stage": 2, "minibatch_size": 4, "learning_rate": 1e-3}})
    try:
        result = run_ppo(cfg, tiny_model_path, [p.question for p in train_prompts()], reward, tmp_path / "ppo")
    finally:
        serve.shutdown()
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(alive) == 2
    assert set(result.learner_nodes) == alive and len(result.learner_nodes) == 2  # one rank per node
    assert set(result.rollout_nodes) == alive  # rollouts were generated on both nodes
    assert result.iterations == 2 and len(result.log) == 2
