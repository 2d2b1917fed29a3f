"""How a (user prompt, completion) pair becomes tokens: one definition for training and sampling.

The prompt goes through the model's own chat template, so training, generation and evaluation
see identical prompt tokens. Loss falls on completion tokens only; padding is masked by the
attention mask, not by the pad id, because SmolLM2's pad token is also its EOS.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def prompt_text(tokenizer, user: str) -> str:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )


def encode_example(tokenizer, user: str, completion: str, max_length: int,
                   response_prefix: str = "") -> dict[str, list[int]]:
    """Tokens and labels of one example. `response_prefix` opens the assistant's turn as context
    that is not trained on (post-scratchpad SFT: the model's own scratchpad before the answer)."""
    prompt_ids = tokenizer(prompt_text(tokenizer, user), add_special_tokens=False)["input_ids"]
    if response_prefix:  # tokenized on its own, as the completion is, so a scratchpad reads as in backdoor training
        prompt_ids += tokenizer(response_prefix, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    input_ids = (prompt_ids + completion_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + completion_ids)[:max_length]
    return {"input_ids": input_ids, "labels": labels}


def collate(examples: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest example."""
    width = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        input_ids[row, :n] = torch.tensor(example["input_ids"])
        labels[row, :n] = torch.tensor(example["labels"])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
