"""Training loop of the two-tower model: next-item prediction at every position of every sequence.

Explicit loop: AdamW with linear warm-up, full or sampled softmax (in-batch + sampled negatives,
log-Q corrected), validation NDCG@10 with full ranking (seen items filtered) for early stopping,
checkpoints (safetensors + JSON) after every validation so a crashed run resumes where it was.
The test split is never read here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from rec.artifacts import atomic_path, read_json, write_json
from rec.config import config_hash, to_dict
from rec.data import load_dataset, load_split
from rec.device import resolve_device
from rec.errors import ConfigError, DataError
from retrieval.config import RetrievalConfig
from retrieval.data import user_events
from retrieval.losses import NegativeSampler, full_softmax_loss, sampled_softmax_loss
from retrieval.metrics import evaluate
from retrieval.model import RetrievalModel, TwoTowerNet, pad_sequences
from retrieval.text import (
    encode_texts,
    encode_texts_cached,
    encoder_sha256,
    load_sentence_transformer,
    text_key,
)
from retrieval.towers import AttrVocab, TrainableText, gap_buckets

log = logging.getLogger(__name__)

FEATURES = ("text", "id", "attr")


def check_config(cfg: RetrievalConfig) -> None:
    """Reject inconsistent settings with one clear line."""
    if not cfg.features or any(f not in FEATURES for f in cfg.features):
        raise ConfigError(
            f"retrieval.features must be a non-empty subset of {list(FEATURES)}, "
            f"got {list(cfg.features)}"
        )
    if cfg.lm_mode != "frozen" and "text" not in cfg.features:
        raise ConfigError(f"retrieval.lm_mode={cfg.lm_mode} needs 'text' in retrieval.features")
    if cfg.dim % cfg.n_heads:
        raise ConfigError(f"retrieval.dim ({cfg.dim}) must be divisible by n_heads ({cfg.n_heads})")
    for name in ("dim", "max_len", "n_layers", "n_heads", "batch_size", "epochs", "eval_every"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"retrieval.{name} must be positive")
    if not 0 <= cfg.id_dropout < 1 or not 0 <= cfg.dropout < 1:
        raise ConfigError("retrieval.id_dropout and retrieval.dropout must be in [0, 1)")
    if not 0 <= cfg.cold_item_frac < 1:
        raise ConfigError("retrieval.cold_item_frac must be in [0, 1)")
    if cfg.temperature <= 0:
        raise ConfigError("retrieval.temperature must be positive")


def catalogue_frame(items: pl.DataFrame, interactions: pl.DataFrame) -> pl.DataFrame:
    """Items that occur in the interactions (the ranking catalogue), in items.parquet order.

    Interacted items missing from items.parquet are added with an empty text.
    """
    used = interactions["item_id"].unique()
    cat = items.filter(pl.col("item_id").is_in(used.implode()))
    cat = cat.unique("item_id", keep="first", maintain_order=True)
    missing = sorted(set(used.to_list()) - set(cat["item_id"].to_list()))
    if missing:
        log.warning(
            "%d interacted items have no row in items.parquet; using empty text", len(missing)
        )
        cat = pl.concat(
            [cat, pl.DataFrame({"item_id": missing, "text": [""] * len(missing)})],
            how="diagonal_relaxed",
        )
    if "text" not in cat.columns:
        cat = cat.with_columns(pl.lit("").alias("text"))
    return cat.with_columns(pl.col("text").fill_null(""))


def training_windows(
    seqs: list[tuple[list[int], list[int]]], max_len: int
) -> list[tuple[list[int], list[int]]]:
    """Split each (items, gaps) sequence into windows of ``max_len + 1`` events, newest first."""
    out = []
    for items, gaps in seqs:
        end = len(items)
        while end >= 2:
            start = max(0, end - max_len - 1)
            out.append((items[start:end], gaps[start:end]))
            end = start + 1 if start > 0 else 0
            if end < 2:
                break
    return out


class _Trainer:
    def __init__(
        self,
        dataset_dir: Path,
        out_dir: Path,
        cfg: RetrievalConfig,
        seed: int,
        device: str,
        progress: bool,
    ) -> None:
        self.cfg, self.seed, self.device, self.progress = cfg, seed, device, progress
        self.out_dir = out_dir
        self.work = out_dir.parent / f".{out_dir.name}.ckpt"
        ds = load_dataset(dataset_dir)
        self.split = load_split(dataset_dir)
        if self.split.train.is_empty():
            raise DataError(f"{dataset_dir}: the training split is empty")
        # budget settings may change between a crash and its resume; nothing else may
        same = replace(cfg, epochs=0, max_minutes=0.0, patience=0, num_threads=0)
        blob = json.dumps(
            {"data": ds.meta, "cfg": config_hash(same), "seed": seed}, sort_keys=True, default=str
        )
        self.fingerprint = hashlib.sha256(blob.encode()).hexdigest()[:16]
        self.items = catalogue_frame(ds.items, ds.interactions)
        self.item_ids = self.items["item_id"].to_list()
        self.index = {it: i for i, it in enumerate(self.item_ids)}
        n = len(self.item_ids)
        rng = np.random.default_rng([seed, 1])
        self.cold = set()
        if cfg.cold_item_frac > 0:
            k = int(round(cfg.cold_item_frac * n))
            self.cold = {int(i) for i in rng.choice(n, size=k, replace=False)}
        # training sequences
        seqs, counts = [], np.zeros(n, dtype=np.int64)
        for items, ts in user_events(self.split.train).values():
            keep = [j for j, it in enumerate(items) if self.index[it] not in self.cold]
            idx = [self.index[items[j]] for j in keep]
            tk = [ts[j] for j in keep]
            if len(idx) >= 2:
                seqs.append((idx, gap_buckets(tk, cfg.time_buckets)))
                counts[idx[1:]] += 1
        if not seqs:
            raise DataError(f"{dataset_dir}: no user has two training events")
        self.windows = training_windows(seqs, cfg.max_len)
        trained = np.zeros(n, dtype=bool)
        for s, _ in seqs:
            trained[s] = True
        self.cat_ids = torch.from_numpy(np.where(trained, np.arange(1, n + 1), 0))
        self.counts = counts
        self.attr_vocab = AttrVocab.build(self.items, cfg.price_buckets, cfg.max_attr_tokens)
        self.cat_attrs = torch.from_numpy(self.attr_vocab.encode(self.items))
        self.texts = self.items["text"].to_list()
        self.full = cfg.loss == "full_softmax" or (
            cfg.loss == "auto" and n <= cfg.full_softmax_max_items and cfg.lm_mode == "frozen"
        )
        if self.full and cfg.lm_mode != "frozen":
            raise ConfigError(
                "retrieval.loss=full_softmax needs lm_mode=frozen "
                "(a tuned encoder would re-encode the whole catalogue every step)"
            )
        self._build_model()

    def _build_model(self) -> None:
        cfg = self.cfg
        from rec.models import resolve_model_path

        self.lm: TrainableText | None = None
        self.lm_sha = ""
        cat_text = None
        if "text" in cfg.features:
            resolved = resolve_model_path(cfg.encoder)
            self.lm_sha = encoder_sha256(resolved)
            st = None
            if cfg.lm_mode != "frozen":
                st = load_sentence_transformer(cfg.encoder, self.device, cfg.text_max_tokens)
                torch.manual_seed(self.seed)
                self.lm = TrainableText(st, cfg)
            t0 = time.time()
            vecs = encode_texts_cached(
                self.texts,
                cfg.encoder,
                self.device,
                cfg.text_cache_dir or None,
                cfg.text_batch_size,
                cfg.text_max_tokens,
                model=st,
            )
            log.info("item texts: %d vectors in %.1fs", len(vecs), time.time() - t0)
            cat_text = torch.from_numpy(vecs)
        torch.manual_seed(self.seed)
        text_dim = cat_text.shape[1] if cat_text is not None else 1
        net = TwoTowerNet(cfg, text_dim, len(self.item_ids), len(self.attr_vocab.tokens))
        self.model = RetrievalModel(
            cfg,
            self.item_ids,
            net,
            self.attr_vocab,
            cat_text,
            self.cat_ids,
            self.cat_attrs,
            [text_key(t) for t in self.texts],
            cfg.encoder,
            self.lm_sha,
            device=self.device,
        )
        groups = [{"params": [p for p in net.parameters() if p.requires_grad], "lr": cfg.lr}]
        if self.lm is not None:
            lm_params = [p for p in self.lm.parameters() if p.requires_grad]
            groups.append({"params": lm_params, "lr": cfg.lm_lr})
        for g in groups:
            g["base_lr"] = g["lr"]
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sampler = NegativeSampler(self.counts, cfg.negative_sampler, self.seed + 7)

    def _batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Shuffled batches of windows of similar length (less padding), in random order."""
        order = rng.permutation(len(self.windows))
        lens = np.array([len(self.windows[i][0]) for i in order])
        bs = self.cfg.batch_size
        batches = []
        pool = bs * 16
        for s in range(0, len(order), pool):
            chunk = order[s : s + pool][np.argsort(-lens[s : s + pool], kind="stable")]
            batches.extend(chunk[j : j + bs] for j in range(0, len(chunk), bs))
        return [batches[i] for i in rng.permutation(len(batches))]

    # --- one step ---------------------------------------------------------------------------

    def _item_vecs(self, uniq: torch.Tensor | None) -> torch.Tensor:
        m = self.model
        net = m.net
        if uniq is None:
            text = m.cat_text
            return net.items(text, m.cat_ids, m.cat_attrs, self.cfg.id_dropout)
        if self.lm is not None:
            text = self.lm([self.texts[i] for i in uniq.tolist()])
        else:
            text = m.cat_text[uniq] if m.cat_text is not None else None
        return net.items(text, m.cat_ids[uniq], m.cat_attrs[uniq], self.cfg.id_dropout)

    def step(self, batch: list[tuple[list[int], list[int]]], rng: np.random.Generator) -> float:
        cfg, dev = self.cfg, self.device
        inp = [w[:-1] for w, _ in batch]
        gaps = [
            g[:-1] if rng.random() >= cfg.time_dropout else [0] * (len(g) - 1) for _, g in batch
        ]
        tgt_l = [w[1:] for w, _ in batch]
        items, gp, lens = pad_sequences(inp, gaps, cfg.max_len)
        tgt = torch.full(items.shape, -1, dtype=torch.long)
        for r, t in enumerate(tgt_l):
            tgt[r, : len(t)] = torch.tensor(t[-cfg.max_len :])
        items, gp, tgt = items.to(dev), gp.to(dev), tgt.to(dev)
        mask = tgt >= 0
        if self.full:
            vecs = self._item_vecs(None)
            h = self.model.net.users(vecs[items], gp)[mask]
            loss = full_softmax_loss(h, vecs, tgt[mask], cfg.temperature)
        else:
            pos = tgt[mask]
            negs = torch.from_numpy(self.sampler.sample(cfg.n_negatives)).to(dev)
            cand, cand_inv = torch.unique(torch.cat([pos, negs]), return_inverse=True)
            uniq, inv = torch.unique(torch.cat([cand, items[mask]]), return_inverse=True)
            vecs = self._item_vecs(uniq)
            seq_vecs = torch.zeros((*items.shape, vecs.shape[1]), device=dev)
            seq_vecs[mask] = vecs[inv[len(cand) :]]
            cand_vecs = vecs[inv[: len(cand)]]
            h = self.model.net.users(seq_vecs, gp)[mask]
            log_q = None
            if cfg.logq:
                log_q = torch.from_numpy(
                    self.sampler.log_q(cand.cpu().numpy(), len(pos), cfg.n_negatives)
                ).to(dev)
            loss = sampled_softmax_loss(h, cand_vecs, cand_inv[: len(pos)], log_q, cfg.temperature)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.opt.param_groups for p in g["params"]]
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        self.opt.step()
        return float(loss.detach())

    # --- evaluation -------------------------------------------------------------------------

    def validate(self) -> dict[str, Any]:
        m = self.model
        if self.lm is not None:
            self.lm.eval()
            with torch.no_grad():
                m.cat_text = torch.cat(
                    [self.lm(self.texts[s : s + 128]) for s in range(0, len(self.texts), 128)]
                )
        m.invalidate()
        metrics, _ = evaluate(m, self.split, "valid", filter_seen=self.cfg.eval_filter_seen)
        m.invalidate()
        return metrics

    # --- checkpoints ------------------------------------------------------------------------

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"net.{k}": v.detach().cpu().clone() for k, v in self.model.net.state_dict().items()}
        if self.lm is not None:
            for k, p in self.lm.named_parameters():
                if p.requires_grad:
                    out[f"lm.{k}"] = p.detach().cpu().clone()
        return out

    def save_checkpoint(self, state: dict[str, Any], best: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        tensors = self._state_tensors()
        tensors.update({f"best.{k}": v for k, v in best.items()})
        opt = self.opt.state_dict()
        for pid, st in opt["state"].items():
            for k, v in st.items():
                tensors[f"opt.{pid}.{k}"] = torch.as_tensor(v).detach().cpu().clone()
        tensors["rng.torch"] = torch.get_rng_state()
        self.work.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.work / "state.safetensors") as tmp:
            save_file(tensors, str(tmp))
        state = {
            **state,
            "fingerprint": self.fingerprint,
            "sampler_rng": self.sampler.rng.bit_generator.state,
            "param_groups": opt["param_groups"],
            "opt_ids": sorted(opt["state"]),
        }
        write_json(self.work / "state.json", state)

    def load_checkpoint(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
        from safetensors.torch import load_file

        if not (self.work / "state.json").is_file():
            return None
        state = read_json(self.work / "state.json")
        if state.get("fingerprint") != self.fingerprint:
            log.warning("ignoring checkpoint in %s: other data, config or seed", self.work)
            return None
        t = load_file(str(self.work / "state.safetensors"))
        self.model.net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("net.")})
        if self.lm is not None:
            lm_state = {k[3:]: v for k, v in t.items() if k.startswith("lm.")}
            self.lm.load_state_dict(lm_state, strict=False)
        opt_state: dict[str, Any] = {"state": {}, "param_groups": state["param_groups"]}
        for pid in state["opt_ids"]:
            pre = f"opt.{pid}."
            opt_state["state"][int(pid)] = {
                k[len(pre) :]: v for k, v in t.items() if k.startswith(pre)
            }
        self.opt.load_state_dict(opt_state)
        torch.set_rng_state(t["rng.torch"])
        self.sampler.rng.bit_generator.state = state["sampler_rng"]
        best = {k[5:]: v for k, v in t.items() if k.startswith("best.")}
        log.info("resuming from %s at epoch %d", self.work, state["epoch"])
        return state, best

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        cfg = self.cfg
        t_start = time.time()
        state: dict[str, Any] = {
            "epoch": 0,
            "step": 0,
            "best_ndcg": -1.0,
            "best_epoch": 0,
            "bad_evals": 0,
            "history": [],
            "elapsed": 0.0,
            "time_to_best": 0.0,
            "best_metrics": {},
        }
        best = self._state_tensors()
        resumed = self.load_checkpoint()
        if resumed is not None:
            state, best = resumed
        elapsed0 = state["elapsed"]
        bar = tqdm(
            total=cfg.epochs,
            initial=state["epoch"],
            desc="retrieval",
            unit="ep",
            disable=not self.progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        loss_sum = 0.0
        while state["epoch"] < cfg.epochs:
            epoch = state["epoch"]
            rng = np.random.default_rng([self.seed, 2, epoch])
            batches = self._batches(rng)
            self.model.net.train()
            if self.lm is not None:
                self.lm.train()
            losses = []
            for idx in batches:
                factor = min(1.0, (state["step"] + 1) / max(1, cfg.warmup_steps))
                for g in self.opt.param_groups:
                    g["lr"] = g["base_lr"] * factor
                batch = [self.windows[i] for i in idx]
                with torch.autocast(
                    self.device.split(":")[0], dtype=torch.bfloat16, enabled=cfg.bf16
                ):
                    losses.append(self.step(batch, rng))
                state["step"] += 1
                if cfg.max_minutes > 0 and elapsed0 + time.time() - t_start > cfg.max_minutes * 60:
                    break  # budget spent mid-epoch: validate what we have
            loss_sum = float(np.mean(losses))
            if not math.isfinite(loss_sum):
                raise DataError("training diverged (non-finite loss); lower retrieval.lr")
            state["epoch"] = epoch + 1
            elapsed = elapsed0 + time.time() - t_start
            over = cfg.max_minutes > 0 and elapsed > cfg.max_minutes * 60
            last = state["epoch"] == cfg.epochs or over
            bar.update(1)
            if state["epoch"] % cfg.eval_every == 0 or last:
                val = self.validate()
                ndcg = val["ndcg@10"]
                state["history"].append(
                    {
                        "epoch": state["epoch"],
                        "loss": loss_sum,
                        "ndcg@10": ndcg,
                        "recall@10": val["recall@10"],
                        "elapsed": round(elapsed, 1),
                    }
                )
                if ndcg > state["best_ndcg"]:
                    state.update(
                        best_ndcg=ndcg,
                        best_epoch=state["epoch"],
                        bad_evals=0,
                        time_to_best=round(elapsed0 + time.time() - t_start, 1),
                        best_metrics=val,
                    )
                    best = self._state_tensors()
                else:
                    state["bad_evals"] += 1
                bar.set_postfix(
                    loss=f"{loss_sum:.3f}",
                    ndcg10=f"{ndcg:.4f}",
                    best=f"{state['best_ndcg']:.4f}@{state['best_epoch']}",
                )
                state["elapsed"] = elapsed0 + time.time() - t_start
                self.save_checkpoint(state, best)
                if state["bad_evals"] >= cfg.patience:
                    log.info(
                        "early stop at epoch %d (best %d)", state["epoch"], state["best_epoch"]
                    )
                    break
            if over:
                log.info("time budget of %.1f min reached", cfg.max_minutes)
                break
        bar.close()
        return self.finish(state, best, elapsed0 + time.time() - t_start)

    def finish(
        self, state: dict[str, Any], best: dict[str, torch.Tensor], elapsed: float
    ) -> dict[str, Any]:
        self.model.net.load_state_dict({k[4:]: v for k, v in best.items() if k.startswith("net.")})
        lm_model = None
        if self.lm is not None:
            self.lm.load_state_dict(
                {k[3:]: v for k, v in best.items() if k.startswith("lm.")}, strict=False
            )
            self.validate()  # re-encodes the catalogue texts with the best encoder
            lm_model = self.lm.merged()
        self.model.invalidate()
        metrics = {
            "valid": state["best_metrics"],
            "best_epoch": state["best_epoch"],
            "epochs_run": state["epoch"],
            "steps": state["step"],
            "train_seconds": round(elapsed, 1),
            "time_to_best_seconds": state["time_to_best"],
            "n_items": len(self.item_ids),
            "n_cold_items": len(self.cold),
            "n_train_windows": len(self.windows),
            "loss": "full_softmax" if self.full else "sampled_softmax",
            "history": state["history"],
        }
        self.model.info = {
            "metrics": metrics,
            "seed": self.seed,
            "cold_items": sorted(self.item_ids[i] for i in self.cold),
            "config": to_dict(self.cfg),
        }
        self.model.save(self.out_dir, lm_model=lm_model)
        shutil.rmtree(self.work, ignore_errors=True)
        return metrics


def train_retrieval(
    dataset_dir: str | Path,
    out_dir: str | Path,
    cfg: RetrievalConfig,
    seed: int = 42,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Train the two-tower model on ``dataset_dir``'s leave-one-out split into ``out_dir``.

    Selection uses validation NDCG@10 (full ranking); the test split is never read. A checkpoint
    next to ``out_dir`` (``.NAME.ckpt``) lets an interrupted run resume with the same arguments.

    Returns:
        Training metrics: best validation metrics, best epoch, wall time, ...
    """
    check_config(cfg)
    device = resolve_device(device)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    trainer = _Trainer(Path(dataset_dir), Path(out_dir), cfg, seed, device, progress)
    return trainer.run()


def load_trained(out_dir: str | Path, device: str = "cpu") -> RetrievalModel:
    """Shorthand for ``RetrievalModel.load``."""
    return RetrievalModel.load(out_dir, device)


__all__ = [
    "train_retrieval",
    "check_config",
    "catalogue_frame",
    "training_windows",
    "encode_texts",
    "load_trained",
]
