"""Provenance: the commit and dirtiness of a real git checkout, and run-relative paths."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from common.provenance import git_state, package_versions, provenance
from common.run_layout import relative_paths


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_git_state_names_the_commit_and_sees_uncommitted_changes(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "commit", "-qm", "one")
    assert git_state(tmp_path) == {"commit": git(tmp_path, "rev-parse", "HEAD"), "dirty": False}
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_state(tmp_path)["dirty"] is True
    git(tmp_path, "checkout", "-q", "a.py")
    (tmp_path / "new_module.py").write_text("")  # an untracked file the run may have imported
    assert git_state(tmp_path)["dirty"] is True


def test_outside_a_checkout_git_state_says_why(tmp_path):
    state = git_state(tmp_path)
    assert state["commit"] is None and "not a git checkout" in state["why"]


def test_provenance_hashes_the_config_and_lists_versions(tmp_path):
    config = tmp_path / "resolved_config.yaml"
    config.write_text("name: x\n")
    record = provenance(config, seed=3)
    assert record["config_sha256"] == hashlib.sha256(b"name: x\n").hexdigest()
    assert record["seed"] == 3 and record["packages"]["torch"] and record["machine"]["cpus"] >= 1
    assert package_versions(("no-such-package-xyz",))["no-such-package-xyz"] is None


def test_relative_paths_makes_every_absolute_path_relative_to_the_run(tmp_path):
    run = tmp_path / "runs" / "r"
    value = {"checkpoint": str(run / "backdoor_sft" / "checkpoint-000010"),
             "start": [str(tmp_path / "runs" / "other" / "ckpt")], "name": "r", "n": 3, "note": "a/b"}
    assert relative_paths(value, run) == {"checkpoint": "backdoor_sft/checkpoint-000010",
                                          "start": ["../other/ckpt"], "name": "r", "n": 3, "note": "a/b"}
