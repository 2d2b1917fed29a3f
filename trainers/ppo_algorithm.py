"""PPO's arithmetic on response-aligned tensors, free of any distributed machinery.

Every tensor here is (batch, response_length): row i holds response i's tokens from its first
generated token on, right-padded; `mask` is 1 on real tokens. Position t's log-prob is that of
the t-th generated token, its value the critic's estimate just before emitting it.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    return (whitened if shift_mean else whitened + mean) * mask


def token_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                  kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token reward: −β·KL at every token, plus the preference model's score on the last.

    KL is the sampled estimate log π(a) − log π_ref(a), the penalty of Ziegler et al. 2019.
    Returns (rewards, kl), both masked.
    """
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(dim=1) - 1).long().clamp(min=0)
    rewards[torch.arange(len(scores)), last] += scores
    return rewards * mask, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation; the episode ends after each row's last real token.

    Padding carries zero reward and zero value, so past a row's end δ and the running sum stay 0
    and the last real token bootstraps from 0 (the terminal state).
    """
    values = values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    returns = advantages + values
    return advantages * mask, returns * mask


def ppo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, values: torch.Tensor, old_values: torch.Tensor,
             advantages: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip_range: float,
             clip_range_value: float, vf_coef: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped policy loss + clipped value loss (Schulman et al. 2017), averaged over real tokens."""
    ratio = torch.exp(logprobs - old_logprobs)
    policy_loss = masked_mean(torch.max(-advantages * ratio,
                                        -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)), mask)
    values_clipped = old_values + (values - old_values).clamp(-clip_range_value, clip_range_value)
    value_loss = 0.5 * masked_mean(torch.max((values - returns) ** 2, (values_clipped - returns) ** 2), mask)
    with torch.no_grad():
        stats = {
            "policy_loss": policy_loss.item(),
            "value_loss": value_loss.item(),
            "clip_fraction": masked_mean(((ratio - 1).abs() > clip_range).float(), mask).item(),
            "value_clip_fraction": masked_mean(((values - old_values).abs() > clip_range_value).float(), mask).item(),
            "approx_kl_old": 0.5 * masked_mean((logprobs - old_logprobs) ** 2, mask).item(),
        }
    return policy_loss + vf_coef * value_loss, stats


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of the softmax over the vocabulary."""
    return torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(dim=-1)


class AdaptiveKLController:
    """Ziegler et al. 2019: nudge β so the observed KL tracks a target (error clipped to ±20%)."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon
