"""Reranker losses over groups of candidates: pointwise binary cross-entropy and listwise softmax."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pointwise_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of every (pair, click label); shapes [groups, m] or [n]."""
    return F.binary_cross_entropy_with_logits(logits, labels)


def listwise_softmax(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over each group's candidates against its normalised labels.

    ``logits`` and ``labels`` are [groups, m]; groups without a positive are ignored.
    """
    mass = labels.sum(dim=1, keepdim=True)
    keep = mass.squeeze(1) > 0
    if not bool(keep.any()):
        return logits.sum() * 0.0
    target = labels[keep] / mass[keep]
    logp = F.log_softmax(logits[keep], dim=1)
    return -(target * logp).sum(dim=1).mean()


LOSSES = {"bce": pointwise_bce, "listwise": listwise_softmax}


def get_loss(name: str):  # noqa: ANN201 - returns one of the functions above
    """The loss function called ``name`` ("bce" or "listwise")."""
    return LOSSES[name]
