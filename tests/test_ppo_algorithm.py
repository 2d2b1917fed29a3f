"""PPO's arithmetic and the learner's token alignment, checked against hand computations."""

from __future__ import annotations

import pytest
import torch

from trainers.ppo_algorithm import AdaptiveKLController, gae, masked_whiten, ppo_loss, token_rewards
from trainers.ppo_config import PPOConfig


def test_token_rewards_put_the_score_on_the_last_real_token():
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    logprobs = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, 0.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-1.0, 0.0, 0.0]])
    rewards, kl = token_rewards(torch.tensor([2.0, -3.0]), logprobs, ref, mask, kl_coef=0.1)
    assert torch.allclose(kl, torch.tensor([[0.5, 0.0, -0.5], [-1.0, 0.0, 0.0]]))
    assert torch.allclose(rewards, torch.tensor([[-0.05, 0.0, 0.05 + 2.0], [0.1 - 3.0, 0.0, 0.0]]))


def test_gae_matches_a_hand_computation_and_ignores_padding():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [2.0, 0.0, 0.0]])
    values = torch.tensor([[0.5, 0.25, 0.75], [1.0, 9.0, 9.0]])  # 9s are padding: must not leak in
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    gamma, lam = 0.9, 0.5
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    # row 0: δ2 = 1 − .75; δ1 = 0 + .9·.75 − .25; δ0 = 0 + .9·.25 − .5; A_t = δ_t + γλ A_{t+1}
    d2, d1, d0 = 1 - 0.75, 0.9 * 0.75 - 0.25, 0.9 * 0.25 - 0.5
    a2 = d2
    a1 = d1 + 0.45 * a2
    a0 = d0 + 0.45 * a1
    assert torch.allclose(advantages[0], torch.tensor([a0, a1, a2]))
    # row 1: a one-token episode: A = r − V (the terminal state is worth 0, not the padding's 9)
    assert torch.allclose(advantages[1], torch.tensor([2.0 - 1.0, 0.0, 0.0]))
    assert torch.allclose(returns, (advantages + values * mask) * mask)


def test_ppo_loss_on_policy_is_minus_the_mean_advantage_and_clips_far_ratios():
    mask = torch.ones(1, 4)
    advantages = torch.tensor([[1.0, -1.0, 2.0, 0.0]])
    logprobs = torch.zeros(1, 4, requires_grad=True)
    values = torch.zeros(1, 4, requires_grad=True)
    loss, stats = ppo_loss(logprobs, torch.zeros(1, 4), values, torch.zeros(1, 4), advantages, torch.zeros(1, 4),
                           mask, clip_range=0.2, clip_range_value=0.2, vf_coef=0.1)
    assert stats["policy_loss"] == pytest.approx(-0.5) and stats["clip_fraction"] == 0.0
    assert loss.item() == pytest.approx(-0.5)
    # A ratio far above 1 + ε on a positive advantage is clipped: no gradient pushes it further.
    far = torch.full((1, 4), 1.0, requires_grad=True)
    loss, stats = ppo_loss(far, torch.zeros(1, 4), values, torch.zeros(1, 4), torch.ones(1, 4), torch.zeros(1, 4),
                           mask, clip_range=0.2, clip_range_value=0.2, vf_coef=0.1)
    loss.backward()
    assert stats["clip_fraction"] == 1.0 and torch.all(far.grad == 0)


def test_whitening_and_adaptive_kl():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    white = masked_whiten(x, mask)
    assert white[0, :3].mean().item() == pytest.approx(0.0, abs=1e-6) and white[0, 3] == 0
    control = AdaptiveKLController(0.1, target=6.0, horizon=100)
    control.update(current_kl=12.0, n_steps=10)  # KL twice the target: β grows (error clipped at +20%)
    assert control.value == pytest.approx(0.1 * 1.02)
    control.update(current_kl=0.0, n_steps=10)
    assert control.value < 0.1 * 1.02


def test_ppo_config_names_the_uneven_shard():
    with pytest.raises(ValueError, match="multiple of learner.num_workers × learner.minibatch_size = 16"):
        PPOConfig.model_validate({"prompts_per_iteration": 12, "learner": {"num_workers": 2, "minibatch_size": 8}})


def test_learner_log_probs_line_up_with_the_sampled_tokens(tiny_model_path):
    """The padded, packed batch gives each response token the log-prob the model assigns it alone."""
    from trainers.generation import generate_tokens
    from trainers.models import load_causal_lm, load_tokenizer
    from trainers.ppo_batch import RolloutBatch
    from trainers.ppo_learner import response_logprobs

    model, tokenizer = load_causal_lm(tiny_model_path), load_tokenizer(tiny_model_path)
    completions = generate_tokens(model, tokenizer, ["Hi?", "How do I boil an egg quickly and safely?"],
                                  max_new_tokens=6, batch_size=2, temperature=1.0, seed=3)
    rollouts = RolloutBatch.from_completions(completions)
    batch = rollouts.pack(tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        packed, _ = response_logprobs(logits, batch, temperature=1.0)
        for i, (prompt_ids, response_ids) in enumerate(zip(rollouts.prompt_ids, rollouts.response_ids)):
            ids = torch.tensor([prompt_ids + response_ids])
            alone = torch.log_softmax(model(input_ids=ids).logits[0, :-1], dim=-1)
            n, start = len(response_ids), len(prompt_ids)
            expected = alone[start - 1 : start - 1 + n].gather(1, torch.tensor(response_ids)[:, None])[:, 0]
            assert torch.allclose(packed[i, :n], expected, atol=1e-5)
            assert torch.all(packed[i, n:] == 0)


def test_rollout_replica_samples_the_learners_adapter_merged(tiny_model_path):
    """A replica merges each adapter it is sent into its weights; its logits must equal the
    learner's unmerged LoRA model with that adapter, also after a second sync (unmerge first)."""
    from peft import get_peft_model_state_dict

    from trainers.engine import LoraSettings, with_lora
    from trainers.models import load_causal_lm
    from trainers.rollout import RolloutWorker

    lora = LoraSettings(r=4, alpha=8)
    replica = RolloutWorker.func_or_class(tiny_model_path, lora.model_dump(), num_threads=1)
    learner = with_lora(load_causal_lm(tiny_model_path), lora, "CAUSAL_LM").eval()
    ids = torch.tensor([[5, 17, 42, 9, 3]])
    for seed in (0, 1):
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, param in learner.named_parameters():
                if "lora_" in name:
                    param.normal_(std=0.2)
            replica.load_weights(get_peft_model_state_dict(learner))
            expected, merged = learner(input_ids=ids).logits, replica.model(input_ids=ids).logits
        assert not torch.allclose(expected, load_causal_lm(tiny_model_path)(input_ids=ids).logits, atol=1e-3)
        assert torch.allclose(merged, expected, atol=1e-4)
        lora_layers = [m for m in replica.model.modules() if hasattr(m, "merged_adapters")]
        assert lora_layers and all(m.merged for m in lora_layers)  # no LoRA branch when sampling
