"""SFT on a two-node Ray cluster started on this machine, one training worker on each node."""

from __future__ import annotations

import json
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
