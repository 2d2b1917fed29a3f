"""The typed batches between the PPO controller and its learner: consistency checks that name
the field, and the shard / minibatch / pad operations the learner relies on."""

from __future__ import annotations

import pytest
import torch

from trainers.generation import Completion
from trainers.ppo_batch import Experience, RolloutBatch, ScoredBatch

ROLLOUTS = RolloutBatch(prompt_ids=[[1, 2, 3], [4, 5], [6], [7, 8, 9, 10]],
                        response_ids=[[11, 12], [13, 14, 15], [16], [17, 18]])


def response_tensor(batch: RolloutBatch, offset: float) -> torch.Tensor:
    """Row i holds offset + 10·i + j at its j-th response token and 0 past its end."""
    rows = [torch.tensor([offset + 10 * i + j for j in range(len(r))]) for i, r in enumerate(batch.response_ids)]
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)


def experience() -> Experience:
    return Experience(ROLLOUTS, *(response_tensor(ROLLOUTS, offset) for offset in (100, 200, 300, 400)))


def test_rollout_batch_checks_name_the_field():
    with pytest.raises(ValueError, match=r"RolloutBatch\.response_ids: 1 rows, but prompt_ids has 2"):
        RolloutBatch(prompt_ids=[[1], [2]], response_ids=[[3]])
    with pytest.raises(ValueError, match=r"RolloutBatch\.prompt_ids\[1\]: empty"):
        RolloutBatch(prompt_ids=[[1], []], response_ids=[[3], [4]])
    with pytest.raises(ValueError, match=r"RolloutBatch\.response_ids\[0\]: empty"):
        RolloutBatch(prompt_ids=[[1]], response_ids=[[]])
    completions = [Completion([1, 2], [3, 4], True), Completion([5], [6], False)]
    assert RolloutBatch.from_completions(completions) == RolloutBatch([[1, 2], [5]], [[3, 4], [6]])


def test_scored_and_experience_checks_name_the_field():
    with pytest.raises(ValueError, match=r"ScoredBatch\.values: shape \(2, 2\), but the batch is \(2, 3\)"):
        ScoredBatch(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"ScoredBatch\.logprobs: expected a \(samples, response length\) tensor"):
        ScoredBatch(torch.zeros(3), torch.zeros(3), torch.zeros(3))
    good = [torch.zeros(4, 3)] * 4
    with pytest.raises(ValueError, match=r"Experience\.advantages: shape \(4, 2\), but the batch is \(4, 3\)"):
        Experience(ROLLOUTS, good[0], good[1], torch.zeros(4, 2), good[3])  # narrower than the longest response
    with pytest.raises(ValueError, match=r"Experience\.returns: shape \(3, 3\), but the batch is \(4, 3\)"):
        Experience(ROLLOUTS, good[0], good[1], good[2], torch.zeros(3, 3))  # a sample short
    with pytest.raises(ValueError, match=r"Experience\.old_values: expected a \(samples, response length\) tensor, "
                                         r"got list"):
        Experience(ROLLOUTS, good[0], [[0.0]], good[2], good[3])


def test_mask_lengths_and_concat_pad_to_the_widest():
    assert ROLLOUTS.response_lengths().tolist() == [2, 3, 1, 2]
    assert torch.equal(ROLLOUTS.response_mask(), torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0.0]]))
    # Two ranks' shards, each as wide as its own longest response; concatenated, zero-padded to the widest.
    first = ScoredBatch.from_rows([torch.tensor([1.0])], [torch.tensor([2.0])], [torch.tensor([3.0])])
    second = ScoredBatch.from_rows([torch.tensor([4.0, 5.0])], [torch.tensor([6.0, 7.0])], [torch.tensor([8.0, 9.0])])
    both = ScoredBatch.concat([first, second])
    assert len(both) == 2
    assert torch.equal(both.logprobs, torch.tensor([[1.0, 0.0], [4.0, 5.0]]))
    assert torch.equal(both.values, torch.tensor([[3.0, 0.0], [8.0, 9.0]]))


def test_select_shard_and_minibatches_keep_rows_whole_and_trim_to_the_longest():
    batch = experience()
    picked = batch.select([2, 0])
    assert picked.rollouts == RolloutBatch([[6], [1, 2, 3]], [[16], [11, 12]])
    assert torch.equal(picked.advantages, torch.tensor([[320.0, 0.0], [300.0, 301.0]]))  # width 2: the longest
    assert torch.equal(picked.mask, torch.tensor([[1.0, 0.0], [1.0, 1.0]]))

    shards = [batch.shard(rank, 2) for rank in range(2)]  # contiguous halves
    assert [s.rollouts.response_ids for s in shards] == [[[11, 12], [13, 14, 15]], [[16], [17, 18]]]
    assert shards[1].returns.shape == (2, 2) and shards[0].returns.shape == (2, 3)
    assert ROLLOUTS.shard(1, 2) == shards[1].rollouts

    minibatches = list(batch.minibatches([3, 1, 0, 2], size=3))
    assert [len(m) for m in minibatches] == [3, 1]
    assert minibatches[0].rollouts.response_ids == [[17, 18], [13, 14, 15], [11, 12]]
    assert torch.equal(minibatches[0].old_logprobs[0], torch.tensor([130.0, 131.0, 0.0]))
    assert torch.equal(minibatches[1].old_values, torch.tensor([[220.0]]))


def test_pack_aligns_response_positions():
    packed = RolloutBatch([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]]).pack(pad_id=0)
    assert packed.input_ids.tolist() == [[1, 2, 3, 5, 6], [4, 7, 8, 9, 0]]
    assert packed.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    # Response token j of row i is predicted at position (prompt length − 1 + j).
    assert packed.positions.tolist() == [[2, 3, 3], [0, 1, 2]]  # past a row's end: clamped, and masked
    assert packed.tokens.tolist()[1] == [7, 8, 9] and packed.tokens.tolist()[0][:2] == [5, 6]
    assert packed.mask.tolist() == [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
