"""Training loop of the cross-encoder reranker: groups of (1 positive + k negatives) per user
query, pointwise or listwise loss, early stopping on validation NDCG@10 of the reranked list,
calibration on the validation served lists, atomic save to RUN/ranking.

The candidate function (retriever or any other first stage) is passed in by the app layer; this
stage never imports retrieval.
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from ranking.calibrate import Calibrator, calibration_report, reliability_plot
from ranking.config import RankingConfig
from ranking.losses import get_loss
from ranking.metrics import hit_at_k, ndcg_at_k
from ranking.model import CrossEncoder, write_meta
from ranking.pairs import (
    CandidateFn,
    Group,
    eval_examples,
    history_texts_of,
    item_texts,
    popularity,
    serving_groups,
    training_examples,
    training_groups,
)
from rec.artifacts import atomic_dir
from rec.data.dataset import Split
from rec.models import resolve_model_path

log = logging.getLogger(__name__)


@dataclass
class TextTables:
    """Item texts for each side of the pair."""

    history: dict[str, str]
    candidate: dict[str, str]

    @classmethod
    def from_items(cls, items: pl.DataFrame, cfg: RankingConfig) -> TextTables:
        return cls(item_texts(items, cfg.history_field), item_texts(items, cfg.candidate_field))


@dataclass
class TrainResult:
    out_dir: Path
    best_step: int
    steps: int
    train_groups: int
    seconds: float
    valid: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def catalogue(items: pl.DataFrame) -> list[str]:
    """Item ids that can be recommended: those with events when ``n_events`` is known."""
    if "n_events" in items.columns:
        items = items.filter(pl.col("n_events") > 0)
    return items["item_id"].to_list()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def group_logits(
    enc: CrossEncoder,
    groups: list[Group],
    texts: TextTables,
    batch_size: int,
    progress: bool = False,
    desc: str = "score",
) -> list[np.ndarray]:
    """Logits of every candidate of every group (batched across groups)."""
    from tqdm.auto import tqdm

    hist, cand, sizes = [], [], []
    for g in groups:
        h = history_texts_of(g.history, texts.history, enc.cfg.history_items)
        hist.extend([h] * len(g.candidates))
        cand.extend(texts.candidate.get(c, c) for c in g.candidates)
        sizes.append(len(g.candidates))
    out = []
    bar = tqdm(total=len(cand), desc=desc, file=sys.stderr, disable=not progress, unit="pair")
    for i in range(0, len(cand), batch_size * 8):
        out.append(
            enc.logits(hist[i : i + batch_size * 8], cand[i : i + batch_size * 8], batch_size)
        )
        bar.update(len(out[-1]))
    bar.close()
    flat = np.concatenate(out) if out else np.zeros(0, np.float32)
    return np.split(flat, np.cumsum(sizes)[:-1]) if sizes else []


def rerank_labels(groups: list[Group], scores: list[np.ndarray]) -> list[np.ndarray]:
    """Each group's labels in the order of descending score (stable: retrieval order on ties)."""
    return [g.labels[np.argsort(-s, kind="stable")] for g, s in zip(groups, scores)]


def list_metrics(groups: list[Group], scores: list[np.ndarray] | None) -> dict[str, float]:
    """NDCG@10 / HR@10 of the lists ordered by ``scores`` (None: retrieval order)."""
    ordered = [g.labels for g in groups] if scores is None else rerank_labels(groups, scores)
    return {"ndcg@10": ndcg_at_k(ordered, 10), "hr@10": hit_at_k(ordered, 10)}


def _flat(
    groups: list[Group], logits: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not groups:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    return (
        np.concatenate(logits),
        np.concatenate([g.labels for g in groups]),
        np.concatenate([g.ranks for g in groups]),
    )


def serving_encoder(enc: CrossEncoder, cfg: RankingConfig, device: str) -> CrossEncoder:
    """The encoder as it will be served (an int8 copy on CPU when ``quantize = "int8"``), so that
    calibration and rank fusion are fitted on the logits that are served."""
    if cfg.quantize != "int8" or device != "cpu":
        return enc
    import copy

    from ranking.model import quantize_int8

    model = quantize_int8(copy.deepcopy(enc.model).eval())
    return CrossEncoder(model, enc.tokenizer, cfg, device)


def serving_precision(cfg: RankingConfig, device: str) -> str:
    """bf16 on CUDA, else int8 or fp32 by ``cfg.quantize``."""
    if device.startswith("cuda"):
        return "bf16"
    return "int8" if cfg.quantize == "int8" else "fp32"


RANK_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, float("inf"))


def fit_calibrator(
    cfg: RankingConfig, groups: list[Group], logits: list[np.ndarray]
) -> tuple[Calibrator, dict[str, Any]]:
    """Fit the calibrator on served validation lists.

    With ``use_retrieval_rank`` the fused score ``z(logit) - w * log(1 + rank)`` is chosen over
    ``RANK_WEIGHTS`` by validation NDCG@10 (``z`` standardises the logit; w = inf is retrieval
    order), then Platt / isotonic calibrated on it; without it only the logit is calibrated.
    """
    lg, y, r = _flat(groups, logits)
    report: dict[str, Any] = {}
    if not cfg.use_retrieval_rank or cfg.calibration not in ("platt", "isotonic"):
        return Calibrator.fit(cfg.calibration, lg, y, r), report
    sd = float(lg.std()) or 1.0
    best: tuple[float, float] | None = None
    for w in RANK_WEIGHTS:
        scores = [
            x / sd - w * np.log1p(g.ranks) if np.isfinite(w) else -np.log1p(g.ranks)
            for g, x in zip(groups, logits)
        ]
        nd = list_metrics(groups, scores)["ndcg@10"]
        report[f"valid_ndcg@10_rank_weight={w}"] = nd
        if best is None or nd > best[0] + 1e-9:
            best = (nd, w)
    assert best is not None
    w = best[1] * sd if np.isfinite(best[1]) else best[1]
    return Calibrator.fit(cfg.calibration, lg, y, r, use_rank=True, rank_weight=w), report


def train_reranker(
    split: Split,
    items: pl.DataFrame,
    candidate_fn: CandidateFn,
    cfg: RankingConfig,
    out_dir: str | Path,
    seed: int = 42,
    device: str = "cpu",
    progress: bool = True,
) -> TrainResult:
    """Fine-tune the cross-encoder on ``split`` and save it (atomically) to ``out_dir``.

    ``candidate_fn`` gives hard negatives for training histories and the served lists for
    validation. Early stopping on validation NDCG@10 of the reranked top-``rerank_top`` list.
    """
    from tqdm.auto import tqdm

    t0 = time.time()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    texts = TextTables.from_items(items, cfg)
    pop_items, pop_counts = popularity(split.train)
    all_items = catalogue(items)

    examples = training_examples(split, cfg.positions_per_user, cfg.max_train_users, rng)
    groups = training_groups(
        examples,
        candidate_fn,
        pop_items,
        pop_counts,
        all_items,
        cfg.negatives,
        cfg.hard_frac,
        cfg.popular_frac,
        cfg.hard_pool,
        rng,
    )
    valid = serving_groups(
        eval_examples(split, "valid", cfg.valid_users, rng), candidate_fn, cfg.rerank_top
    )
    log.info(
        "reranker: %d training groups, %d validation lists (%.1fs to build)",
        len(groups),
        len(valid),
        time.time() - t0,
    )

    enc = CrossEncoder.from_pretrained(resolve_model_path(cfg.model), cfg, device=device)
    enc.model.train()
    params = [p for p in enc.model.parameters() if p.requires_grad]
    lr = cfg.lora_lr if cfg.finetune == "lora" else cfg.lr
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(groups) / cfg.batch_groups)
    total = cfg.max_steps or per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / max(1, cfg.warmup_steps)) * max(0.0, 1.0 - s / max(1, total))
            if total
            else 1.0
        ),
    )
    loss_fn = get_loss(cfg.loss)

    def validate() -> float:
        scores = group_logits(enc, valid, texts, cfg.eval_batch_size)
        return list_metrics(valid, scores)["ndcg@10"]

    retrieval_valid = list_metrics(valid, None)
    best_ndcg, best_step, best_state = -1.0, 0, None
    history: list[dict[str, Any]] = []
    bad, step, stop = 0, 0, False
    deadline = t0 + cfg.max_minutes * 60 if cfg.max_minutes else math.inf
    bar = tqdm(total=total, desc="train reranker", file=sys.stderr, disable=not progress)
    for epoch in range(cfg.epochs if not cfg.max_steps else 10**9):
        order = rng.permutation(len(groups))
        for b in range(0, len(order), cfg.batch_groups):
            batch = [groups[int(i)] for i in order[b : b + cfg.batch_groups]]
            hist, cand = [], []
            for g in batch:
                h = history_texts_of(g.history, texts.history, cfg.history_items)
                hist.extend([h] * len(g.candidates))
                cand.extend(texts.candidate.get(c, c) for c in g.candidates)
            logits = enc.forward(hist, cand).view(len(batch), -1)
            labels = torch.tensor(np.stack([g.labels for g in batch]), device=logits.device)
            loss = loss_fn(logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", best=f"{best_ndcg:.4f}")
            last = step >= total or time.time() > deadline
            if (cfg.eval_every and step % cfg.eval_every == 0) or last:
                nd = validate()
                history.append(
                    {
                        "step": step,
                        "epoch": epoch,
                        "valid_ndcg@10": nd,
                        "loss": float(loss.item()),
                        "seconds": time.time() - t0,
                    }
                )
                log.info(
                    "step %d: valid NDCG@10 %.4f (retrieval %.4f)",
                    step,
                    nd,
                    retrieval_valid["ndcg@10"],
                )
                if nd > best_ndcg + 1e-9:
                    best_ndcg, best_step, best_state, bad = nd, step, enc.state(), 0
                else:
                    bad += 1
                    if bad >= cfg.patience:
                        stop = True
            if last or stop:
                stop = True
                break
        if stop:
            break
    bar.close()
    if best_state is not None:
        enc.load_state(best_state)

    # calibration on the served validation lists
    v_logits = group_logits(serving_encoder(enc, cfg, device), valid, texts, cfg.eval_batch_size)
    cal, fusion = fit_calibrator(cfg, valid, v_logits)
    lg, y, r = _flat(valid, v_logits)
    raw = 1.0 / (1.0 + np.exp(-lg))
    probs = cal.transform(lg, r)
    valid_report = {
        "users": len(valid),
        "retrieval": retrieval_valid,
        "cross_encoder": list_metrics(valid, v_logits),
        "reranked": list_metrics(valid, [cal.score(x, g.ranks) for g, x in zip(valid, v_logits)]),
        "ceiling": float(np.mean([g.labels.sum() > 0 for g in valid])) if valid else 0.0,
        "calibration_uncalibrated": calibration_report(raw, y),
        "calibration": calibration_report(probs, y),
        "calibrated_on": f"validation served lists: retrieval top-{cfg.rerank_top}",
        **fusion,
    }
    seconds = time.time() - t0
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        enc.save(tmp)
        reliability_plot(
            tmp / "reliability_valid.png",
            {"sigmoid(logit)": (raw, y), f"{cal.method}": (probs, y)},
            title="Reranker, validation served lists",
        )
        write_meta(
            tmp,
            cfg,
            cal,
            {
                "base_model": cfg.model,
                "seed": seed,
                "device": device,
                "best_step": best_step,
                "steps": step,
                "train_groups": len(groups),
                "train_seconds": seconds,
                "valid": valid_report,
                "calibrated_precision": serving_precision(cfg, device),
                "history": history,
            },
        )
    return TrainResult(out_dir, best_step, step, len(groups), seconds, valid_report, history)


def recalibrate(
    model_dir: str | Path,
    split: Split,
    items: pl.DataFrame,
    candidate_fn: CandidateFn,
    valid_users: int = 0,
    seed: int = 42,
    device: str = "cpu",
    progress: bool = True,
    note: str = "",
) -> dict[str, Any]:
    """Refit the calibrator (and rank fusion) of a saved reranker on validation lists served by
    ``candidate_fn`` (e.g. after the first stage changed); rewrites ranking.json atomically."""
    from ranking.model import MARKER
    from rec.artifacts import read_json
    from rec.config import from_dict

    model_dir = Path(model_dir)
    meta = read_json(model_dir / MARKER)
    cfg = from_dict(RankingConfig, meta["config"])
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    enc = CrossEncoder.from_pretrained(str(model_dir), cfg, device=device, for_training=False)
    texts = TextTables.from_items(items, cfg)
    rng = np.random.default_rng(seed)
    valid = serving_groups(
        eval_examples(split, "valid", valid_users, rng), candidate_fn, cfg.rerank_top
    )
    served = serving_encoder(enc, cfg, device)
    v_logits = group_logits(served, valid, texts, cfg.eval_batch_size, progress, "recalibrate")
    cal, fusion = fit_calibrator(cfg, valid, v_logits)
    lg, y, r = _flat(valid, v_logits)
    raw = 1.0 / (1.0 + np.exp(-lg))
    probs = cal.transform(lg, r)
    report = {
        "users": len(valid),
        "retrieval": list_metrics(valid, None),
        "cross_encoder": list_metrics(valid, v_logits),
        "reranked": list_metrics(valid, [cal.score(x, g.ranks) for g, x in zip(valid, v_logits)]),
        "ceiling": float(np.mean([g.labels.sum() > 0 for g in valid])) if valid else 0.0,
        "calibration_uncalibrated": calibration_report(raw, y),
        "calibration": calibration_report(probs, y),
        "calibrated_on": f"validation served lists: {note or 'first stage'} top-{cfg.rerank_top}",
        **fusion,
    }
    reliability_plot(
        model_dir / "reliability_valid.png",
        {"sigmoid(logit)": (raw, y), f"{cal.method}": (probs, y)},
        title="Reranker, validation served lists",
    )
    extra = {k: v for k, v in meta.items() if k not in ("config", "calibrator")}
    extra["valid"] = report
    extra["calibrated_precision"] = serving_precision(cfg, device)
    extra.setdefault("recalibrations", []).append(note)
    write_meta(model_dir, cfg, cal, extra)
    return report
