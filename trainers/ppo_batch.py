"""What the PPO controller and its learner hand each other: typed batches of named tensors.

The contract is veRL's `DataProto` in small: every batch says what each field is, checks on
construction that its fields agree (one row per sample, response-aligned tensors as wide as
the longest response), and knows how to split itself into shards and minibatches.

    controller ──RolloutBatch──▶ learner.score ──ScoredBatch──▶ controller (rewards, GAE)
    controller ──Experience────▶ learner.update

Response-aligned tensors are (samples, longest response): row i holds response i's tokens from
its first generated token on, right-padded with zeros; `response_mask()` is 1 on real tokens.
Position t's log-prob is that of the t-th generated token, its value the critic's estimate
just before emitting it (see `trainers.ppo_algorithm`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterator, Sequence

import torch


def _check_response_tensors(batch: object, names: Sequence[str], samples: int, width: int | None) -> None:
    """Each named field is a (samples, width) tensor; the error names the batch type and the field.
    With `width` None, the first field sets it."""
    for name in names:
        value, where = getattr(batch, name), f"{type(batch).__name__}.{name}"
        if not isinstance(value, torch.Tensor) or value.dim() != 2:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{where}: expected a (samples, response length) tensor, got {shape}")
        width = value.shape[1] if width is None else width
        if tuple(value.shape) != (samples, width):
            raise ValueError(f"{where}: shape {tuple(value.shape)}, but the batch is {(samples, width)} "
                             f"(samples × longest response)")


def _pad_rows(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True)


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value
class PackedRollouts:
    """Rollouts as one forward pass reads them (learner-side only; built by `RolloutBatch.pack`)."""

    input_ids: torch.Tensor  # (samples, width): prompt + response, right-padded with the pad id
    attention_mask: torch.Tensor  # (samples, width): 1 on prompt and response tokens
    positions: torch.Tensor  # (samples, longest response): the logits position that predicts response token j
    tokens: torch.Tensor  # (samples, longest response): response token j (what `positions` predicts)
    mask: torch.Tensor  # (samples, longest response): 1.0 on real response tokens

    def to(self, device) -> PackedRollouts:
        return PackedRollouts(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass(frozen=True)
class RolloutBatch:
    """Sampled answers as token ids, one row per sample: what the learner scores and trains on.

    Token ids rather than text, because decoding and re-encoding would not give back the
    tokens the policy sampled, and PPO's ratio needs exactly those.
    """

    prompt_ids: list[list[int]]  # the chat-formatted prompt, no padding
    response_ids: list[list[int]]  # the sampled answer up to and including EOS, no padding

    def __post_init__(self) -> None:
        if len(self.prompt_ids) != len(self.response_ids):
            raise ValueError(f"RolloutBatch.response_ids: {len(self.response_ids)} rows, but prompt_ids has "
                             f"{len(self.prompt_ids)}")
        for name in ("prompt_ids", "response_ids"):
            # A response token is predicted from the token before it: neither side may be empty.
            empty = [i for i, ids in enumerate(getattr(self, name)) if not ids]
            if empty:
                raise ValueError(f"RolloutBatch.{name}[{empty[0]}]: empty (every sample needs at least one token)")

    @classmethod
    def from_completions(cls, completions) -> RolloutBatch:
        """From `trainers.generation.Completion`s (what the rollout workers return)."""
        return cls([c.prompt_ids for c in completions], [c.response_ids for c in completions])

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def response_lengths(self) -> torch.Tensor:
        return torch.tensor([len(ids) for ids in self.response_ids])

    def response_mask(self) -> torch.Tensor:
        """(samples, longest response) float mask: 1.0 on real response tokens."""
        lengths = self.response_lengths()
        return (torch.arange(int(lengths.max()))[None] < lengths[:, None]).float()

    def select(self, indices: Sequence[int]) -> RolloutBatch:
        return RolloutBatch([self.prompt_ids[i] for i in indices], [self.response_ids[i] for i in indices])

    def shard(self, rank: int, world: int) -> RolloutBatch:
        return self.select(_shard_indices(len(self), rank, world))

    def pack(self, pad_id: int) -> PackedRollouts:
        """Prompt+response rows, right-padded; `positions[i, j]` indexes the logits that predict
        response token j of row i (the position just before it)."""
        seqs = [p + r for p, r in zip(self.prompt_ids, self.response_ids)]
        width, length = max(map(len, seqs)), max(map(len, self.response_ids))
        input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, seq in enumerate(seqs):
            input_ids[i, : len(seq)], attention_mask[i, : len(seq)] = torch.tensor(seq), 1
        starts = torch.tensor([len(p) - 1 for p in self.prompt_ids])
        lengths = self.response_lengths()
        offsets = torch.arange(length)
        mask = (offsets[None] < lengths[:, None]).float()
        positions = (starts[:, None] + offsets[None]).clamp(max=width - 2)
        return PackedRollouts(input_ids=input_ids, attention_mask=attention_mask, positions=positions,
                              tokens=input_ids.gather(1, positions + 1), mask=mask)


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value
class ScoredBatch:
    """The learner's reading of a RolloutBatch, row for row (response-aligned, zero past each end)."""

    logprobs: torch.Tensor  # log π(token) under the current policy (sampling temperature applied)
    ref_logprobs: torch.Tensor  # log π_ref(token) under the reference (starting) model
    values: torch.Tensor  # the value head's estimate before each token

    TENSORS = ("logprobs", "ref_logprobs", "values")

    def __post_init__(self) -> None:
        samples = len(self.logprobs) if isinstance(self.logprobs, torch.Tensor) else 0
        _check_response_tensors(self, self.TENSORS, samples, None)

    def __len__(self) -> int:
        return len(self.logprobs)

    @classmethod
    def from_rows(cls, logprobs: Sequence[torch.Tensor], ref_logprobs: Sequence[torch.Tensor],
                  values: Sequence[torch.Tensor]) -> ScoredBatch:
        """From one 1-D tensor per sample (its response's length), zero-padded to the longest."""
        return cls(_pad_rows(logprobs), _pad_rows(ref_logprobs), _pad_rows(values))

    @classmethod
    def concat(cls, parts: Sequence[ScoredBatch]) -> ScoredBatch:
        """The shards of the learner's ranks, in rank order, padded to the widest."""
        return cls.from_rows(*([row for part in parts for row in getattr(part, name)] for name in cls.TENSORS))


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value
class Experience:
    """One iteration's training data for the learner's PPO epochs: the rollouts and what the
    controller computed for them. Tensors are response-aligned, as wide as the longest response."""

    rollouts: RolloutBatch
    old_logprobs: torch.Tensor  # the policy's log-probs when the rollouts were scored (PPO's ratio denominator)
    old_values: torch.Tensor  # the value head's estimates then (the value loss clips around them)
    advantages: torch.Tensor  # whitened GAE advantages
    returns: torch.Tensor  # the value head's targets: advantages + old values, before whitening

    TENSORS = ("old_logprobs", "old_values", "advantages", "returns")

    def __post_init__(self) -> None:
        _check_response_tensors(self, self.TENSORS, len(self.rollouts), int(self.rollouts.response_lengths().max()))

    def __len__(self) -> int:
        return len(self.rollouts)

    @property
    def mask(self) -> torch.Tensor:
        return self.rollouts.response_mask()

    def select(self, indices: Sequence[int]) -> Experience:
        """These rows, in this order, trimmed to the longest of their responses."""
        rollouts = self.rollouts.select(indices)
        index, width = torch.tensor(list(indices), dtype=torch.long), int(rollouts.response_lengths().max())
        return Experience(rollouts, *(getattr(self, name)[index, :width] for name in self.TENSORS))

    def shard(self, rank: int, world: int) -> Experience:
        return self.select(_shard_indices(len(self), rank, world))

    def minibatches(self, order: Sequence[int], size: int) -> Iterator[Experience]:
        """Consecutive `size`-row minibatches of the rows in `order` (the last may be smaller)."""
        for start in range(0, len(order), size):
            yield self.select(order[start : start + size])


def _shard_indices(samples: int, rank: int, world: int) -> range:
    """Rank r's contiguous share; `PPOConfig` makes the split even, so every rank steps alike."""
    size = samples // world
    return range(rank * size, (rank + 1) * size)
