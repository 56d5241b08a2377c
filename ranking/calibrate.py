"""Calibration of reranker logits into click probabilities, fitted on validation served lists.

Fitted on the distribution that is served: the validation users' retrieved top-``rerank_top``
lists (base rate = retrieval ceiling / list length), not on the training groups, whose base rate
is 1 / (1 + negatives). Methods: ``platt`` (logistic regression on the logit and, optionally,
log(1 + retrieval rank): calibration and score fusion in one), ``temperature`` (logit / T, no
bias: cannot repair a base-rate shift, kept for comparison), ``isotonic`` (pool-adjacent-violators
on the Platt score), ``none`` (sigmoid of the logit).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ranking.metrics import auc, ece, ece_adaptive, log_loss, reliability


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


def _features(logits: np.ndarray, ranks: np.ndarray | None, use_rank: bool) -> np.ndarray:
    cols = [np.ones_like(logits, dtype=np.float64), np.asarray(logits, dtype=np.float64)]
    if use_rank:
        r = np.zeros_like(logits, dtype=np.float64) if ranks is None else np.asarray(ranks)
        cols.append(np.log1p(r.astype(np.float64)))
    return np.stack(cols, axis=1)


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 100) -> np.ndarray:
    """Newton-Raphson logistic regression (intercept unpenalised)."""
    w = np.zeros(x.shape[1])
    rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    w[0] = np.log(rate / (1 - rate))
    reg = np.full(x.shape[1], l2)
    reg[0] = 0.0
    for _ in range(iters):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - y) + reg * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def _pav(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic (non-decreasing) fit: block boundaries (x) and values (y)."""
    order = np.argsort(x, kind="mergesort")
    xs, ys = x[order], y[order].astype(np.float64)
    vals, wts, lo_x, hi_x = [], [], [], []
    for xi, yi in zip(xs, ys):
        vals.append(yi)
        wts.append(1.0)
        lo_x.append(xi)
        hi_x.append(xi)
        while len(vals) > 1 and vals[-2] >= vals[-1]:
            w = wts[-2] + wts[-1]
            v = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / w
            vals[-2:] = [v]
            wts[-2:] = [w]
            lo_x[-2:] = [lo_x[-2]]
            hi_x[-2:] = [hi_x[-1]]
    knots_x = np.array([(a + b) / 2.0 for a, b in zip(lo_x, hi_x)])
    return knots_x, np.array(vals)


@dataclass
class Calibrator:
    """Maps (logit, retrieval rank) to a click probability."""

    method: str = "none"
    use_rank: bool = False
    weights: list[float] = field(default_factory=lambda: [0.0, 1.0])
    temperature: float = 1.0
    knots_x: list[float] = field(default_factory=list)
    knots_y: list[float] = field(default_factory=list)
    base_rate: float = 0.0
    n_fit: int = 0
    rank_weight: float | None = None  # fixed fusion weight chosen on validation NDCG

    @classmethod
    def fit(
        cls,
        method: str,
        logits: np.ndarray,
        labels: np.ndarray,
        ranks: np.ndarray | None = None,
        use_rank: bool = False,
        rank_weight: float | None = None,
    ) -> Calibrator:
        """Fit ``method`` on validation logits / labels (and retrieval ranks).

        With ``use_rank``: ``rank_weight`` None fits logit and log(1 + rank) jointly by logistic
        regression; a number fixes the fused score ``logit - rank_weight * log(1 + rank)``
        (``inf``: the rank alone) and fits only its scale and bias.
        """
        logits = np.asarray(logits, dtype=np.float64)
        y = np.asarray(labels, dtype=np.float64)
        cal = cls(
            method=method,
            use_rank=use_rank and method in ("platt", "isotonic"),
            base_rate=float(y.mean()) if len(y) else 0.0,
            n_fit=int(len(y)),
        )
        if method == "none" or len(y) == 0 or y.min() == y.max():
            cal.method = "none" if method == "none" else cal.method
            return cal
        if method == "temperature":
            best = (np.inf, 1.0)
            for t in np.exp(np.linspace(np.log(0.05), np.log(50), 400)):
                loss = log_loss(_sigmoid(logits / t), y)
                if loss < best[0]:
                    best = (loss, float(t))
            cal.temperature = best[1]
            return cal
        x = _features(logits, ranks, cal.use_rank)
        if cal.use_rank and rank_weight is not None:
            cal.rank_weight = float(rank_weight)
            lr = x[:, 2]
            fused = -lr if np.isinf(rank_weight) else x[:, 1] - rank_weight * lr
            b, a = _fit_logistic(np.stack([x[:, 0], fused], axis=1), y)
            cal.weights = [b, 0.0, -a] if np.isinf(rank_weight) else [b, a, -a * rank_weight]
        else:
            cal.weights = _fit_logistic(x, y).tolist()
        if method == "isotonic":
            kx, ky = _pav(x @ np.array(cal.weights), y)
            cal.knots_x, cal.knots_y = kx.tolist(), ky.tolist()
        return cal

    def score(self, logits: np.ndarray, ranks: np.ndarray | None = None) -> np.ndarray:
        """The fused score (a logit) that orders the list."""
        logits = np.asarray(logits, dtype=np.float64)
        if self.method in ("platt", "isotonic"):
            return _features(logits, ranks, self.use_rank) @ np.array(self.weights)
        if self.method == "temperature":
            return logits / self.temperature
        return logits

    def transform(self, logits: np.ndarray, ranks: np.ndarray | None = None) -> np.ndarray:
        """Click probabilities."""
        s = self.score(logits, ranks)
        if self.method == "isotonic" and self.knots_x:
            return np.clip(np.interp(s, self.knots_x, self.knots_y), 1e-6, 1 - 1e-6)
        return _sigmoid(s)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        return cls(**d)


def calibration_report(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, Any]:
    """AUC, log-loss, ECE (equal-width and equal-count bins), base rate and mean prediction."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    return {
        "auc": auc(probs, labels),
        "log_loss": log_loss(probs, labels),
        "ece": ece(probs, labels, bins),
        "ece_adaptive": ece_adaptive(probs, labels, bins),
        "base_rate": float(labels.mean()) if len(labels) else 0.0,
        "mean_pred": float(probs.mean()) if len(probs) else 0.0,
        "pairs": int(len(labels)),
        "positives": int(labels.sum()),
    }


def reliability_plot(
    path: str | Path,
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    title: str = "Reliability",
    bins: int = 15,
) -> Path:
    """Write a reliability diagram PNG (one curve per name: probabilities, labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rec.artifacts import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for name, (p, y) in curves.items():
        pts = reliability(p, y, bins, adaptive=True)
        if pts:
            xs, ys, _ = zip(*pts)
            axes[0].plot(xs, ys, marker="o", label=f"{name} (ECE {ece(p, y, bins):.3f})")
    lim = max([1e-3] + [float(np.max(p)) for p, _ in curves.values() if len(p)])
    for name, (p, _) in curves.items():
        if len(p):
            axes[1].hist(p, bins=30, range=(0, lim), alpha=0.5, label=name, log=True)
    axes[0].plot([0, lim], [0, lim], "k--", lw=1)
    axes[0].set_xlabel("predicted click probability")
    axes[0].set_ylabel("observed click rate")
    axes[0].set_title(f"{title} (equal-count bins)", fontsize=9)
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("predicted click probability")
    axes[1].set_ylabel("pairs (log)")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
