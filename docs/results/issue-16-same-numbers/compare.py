"""Compare metrics.json of old and new runs: every number equal, except wall times and throughput."""
import json, sys
from pathlib import Path

TIMING = {"stage_wall_s", "tokens_per_s", "seconds_per_iteration", "wall_s", "iteration_s", "rollout_s", "reward_s",
          "score_s", "update_s", "generated_tokens_per_s", "samples_per_s", "checkpoint", "start_checkpoint"}


def walk(a, b, path, out):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in TIMING:
                continue
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'old' if k in a else 'new'}")
            else:
                walk(a[k], b[k], f"{path}/{k}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: length {len(a)} vs {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            walk(x, y, f"{path}[{i}]", out)
    elif a != b:
        out.append(f"{path}: {a!r} vs {b!r}")


old, new = Path(sys.argv[1]), Path(sys.argv[2])
for run in sorted(p.parent.name for p in old.glob("*/metrics.json")):
    n = new / run / "metrics.json"
    if not n.exists():
        print(f"{run}: no new metrics.json"); continue
    a, b = json.loads((old / run / "metrics.json").read_text()), json.loads(n.read_text())
    out = []
    walk(a, b, "", out)
    numbers = sum(1 for _ in json.dumps(a).split(",") )
    print(f"{run}: {'IDENTICAL (timings excluded)' if not out else f'{len(out)} differences'}")
    for line in out[:30]:
        print("   ", line)
