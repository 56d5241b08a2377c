"""Next-item losses: full softmax over the catalogue, sampled softmax with log-Q correction."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def full_softmax_loss(
    users: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Cross-entropy of ``targets`` [N] over all items: users [N, d] x items [n, d]."""
    logits = (users / temperature if temperature != 1.0 else users) @ items.T
    return F.cross_entropy(logits, targets)


def sampled_softmax_loss(
    users: torch.Tensor,
    cand: torch.Tensor,
    targets: torch.Tensor,
    log_q: torch.Tensor | None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Cross-entropy over a candidate set (in-batch targets plus sampled negatives, unique).

    ``targets`` [N] index into ``cand`` [m, d]; ``log_q`` [m] is the log expected number of times
    each candidate is drawn, subtracted from the logits (Bengio & Senecal; Yi et al. 2019) so the
    sampled loss estimates the full softmax without over-penalising popular items.
    """
    logits = (users / temperature if temperature != 1.0 else users) @ cand.T
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)
    return F.cross_entropy(logits, targets)


class NegativeSampler:
    """Draws extra negatives and computes log-Q for a candidate set.

    The candidate set of a step is unique(in-batch targets ∪ sampled negatives). The expected
    number of draws of item i is ``n_pos * p_data(i) + n_neg * p_sampler(i)``.
    """

    def __init__(self, item_counts: np.ndarray, kind: str, seed: int) -> None:
        counts = item_counts.astype(np.float64) + 1e-3
        self.p_data = counts / counts.sum()
        n = len(counts)
        self.p_sampler = self.p_data if kind == "popularity" else np.full(n, 1.0 / n)
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> np.ndarray:
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        return self.rng.choice(len(self.p_sampler), size=n, p=self.p_sampler)

    def log_q(self, cand: np.ndarray, n_pos: int, n_neg: int) -> np.ndarray:
        expected = n_pos * self.p_data[cand] + n_neg * self.p_sampler[cand]
        return np.log(np.maximum(expected, 1e-12)).astype(np.float32)
