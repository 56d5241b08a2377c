"""Inference API of the two-tower retrieval model: load, encode items and users, score, recommend.

A model directory holds::

    model.json               format, config, catalogue item ids, attribute vocabulary, text encoder
                             reference + sha256, encoder_sha256, training metrics
    weights.safetensors      item tower + user tower
    catalogue.safetensors    catalogue text vectors, ID indices, attribute tokens, item vectors
    encoder/                 the tuned sentence encoder (save_pretrained), only when it was trained
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from rec.artifacts import atomic_dir, read_json, write_json
from rec.errors import ArtifactError, DataError, RecError
from retrieval.config import RetrievalConfig
from retrieval.text import encode_texts_cached, encoder_sha256, text_key
from retrieval.towers import AttrVocab, ItemTower, UserTower, gap_buckets

log = logging.getLogger(__name__)

FORMAT = "rec.retrieval/1"
ITEM_TOWER_CONFIG_KEYS = (
    "encoder",
    "features",
    "fusion",
    "lm_mode",
    "dim",
    "text_max_tokens",
    "price_buckets",
    "max_attr_tokens",
)


class TwoTowerNet(nn.Module):
    """Item tower + user tower, plus the catalogue's item features as tensors."""

    def __init__(self, cfg: RetrievalConfig, text_dim: int, n_ids: int, n_attr: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.item_tower = ItemTower(cfg, text_dim, n_ids, n_attr)
        self.user_tower = UserTower(cfg)

    def items(
        self,
        text: torch.Tensor | None,
        ids: torch.Tensor,
        attrs: torch.Tensor,
        id_drop: float = 0.0,
    ) -> torch.Tensor:
        """Item vectors; with ``id_drop`` > 0 each item's ID is hidden with that probability."""
        if id_drop > 0 and "id" in self.cfg.features:
            keep = torch.rand(ids.shape, device=ids.device) >= id_drop
            ids = ids * keep
        return self.item_tower(text, ids, attrs)

    def users(self, seq_vecs: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        """User states at every position [B, T, d]."""
        return self.user_tower(seq_vecs, gaps)


def pad_sequences(
    seqs: list[list[int]], gaps: list[list[int]], max_len: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (items [B, T], gaps [B, T], lengths [B]) keeping the last ``max_len`` events."""
    seqs = [s[-max_len:] for s in seqs]
    gaps = [g[-max_len:] for g in gaps]
    t = max(1, max(len(s) for s in seqs))
    items = np.zeros((len(seqs), t), dtype=np.int64)
    gp = np.zeros((len(seqs), t), dtype=np.int64)
    for r, (s, g) in enumerate(zip(seqs, gaps)):
        items[r, : len(s)] = s
        gp[r, : len(g)] = g
        if g:
            gp[r, 0] = 0  # the first event of a window has no known gap
    lens = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    return torch.from_numpy(items), torch.from_numpy(gp), lens


class RetrievalModel:
    """A trained two-tower model over a fixed catalogue; ``metric = "ip"`` (inner product)."""

    metric = "ip"

    def __init__(
        self,
        cfg: RetrievalConfig,
        item_ids: list[str],
        net: TwoTowerNet,
        attr_vocab: AttrVocab,
        cat_text: torch.Tensor | None,
        cat_ids: torch.Tensor,
        cat_attrs: torch.Tensor,
        text_keys: list[str],
        lm_ref: str,
        lm_sha256: str,
        device: str = "cpu",
        info: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.item_ids = list(item_ids)
        self.index = {it: i for i, it in enumerate(self.item_ids)}
        self.net = net.to(device)
        self.attr_vocab = attr_vocab
        self.cat_text = cat_text.to(device) if cat_text is not None else None
        self.cat_ids = cat_ids.to(device)
        self.cat_attrs = cat_attrs.to(device)
        self.text_keys = list(text_keys)
        self.lm_ref = lm_ref
        self.lm_sha256 = lm_sha256
        self.device = device
        self.info = dict(info or {})
        self.model_dir: Path | None = None
        self._item_vecs: torch.Tensor | None = None

    # --- item side --------------------------------------------------------------------------

    @torch.no_grad()
    def item_vectors(self) -> np.ndarray:
        """float32 [n_items, d] vectors of the catalogue (cached)."""
        return self._catalogue_vectors().cpu().numpy()

    def _catalogue_vectors(self) -> torch.Tensor:
        if self._item_vecs is None:
            self.net.eval()
            with torch.no_grad():
                self._item_vecs = self.net.items(self.cat_text, self.cat_ids, self.cat_attrs)
        return self._item_vecs

    def invalidate(self) -> None:
        """Forget cached catalogue vectors (after the weights changed)."""
        self._item_vecs = None

    @torch.no_grad()
    def encode_items(self, items_df: pl.DataFrame) -> np.ndarray:
        """float32 [n, d] vectors for items (``item_id``, ``text`` and optional attribute columns).

        Items never seen in training get vectors from text and attributes alone.
        """
        if "item_id" not in items_df.columns:
            raise DataError("items frame has no 'item_id' column")
        if "text" in self.cfg.features and "text" not in items_df.columns:
            raise DataError("items frame has no 'text' column (the item tower reads item text)")
        n = len(items_df)
        ids = items_df["item_id"].cast(pl.Utf8).to_list()
        cat = [self.index.get(i) for i in ids]
        id_idx = torch.tensor(
            [int(self.cat_ids[c]) if c is not None else 0 for c in cat],
            dtype=torch.long,
            device=self.device,
        )
        attrs = torch.from_numpy(self.attr_vocab.encode(items_df)).to(self.device)
        text = None
        if "text" in self.cfg.features:
            texts = [t or "" for t in items_df["text"].cast(pl.Utf8).to_list()]
            keys = [text_key(t) for t in texts]
            assert self.cat_text is not None
            text = torch.empty((n, self.cat_text.shape[1]), device=self.device)
            todo = []
            for r, (c, k) in enumerate(zip(cat, keys)):
                if c is not None and self.text_keys[c] == k:
                    text[r] = self.cat_text[c]
                else:
                    todo.append(r)
            if todo:
                vecs = self.encode_texts([texts[r] for r in todo])
                text[todo] = torch.from_numpy(vecs).to(self.device)
        self.net.eval()
        out = self.net.items(text, id_idx, attrs)
        return out.cpu().numpy().astype(np.float32)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Text vectors from this model's sentence encoder (disk-cached by text and encoder)."""
        ref = self.lm_ref
        if self.model_dir is not None and (self.model_dir / "encoder").is_dir():
            ref = str(self.model_dir / "encoder")
        from rec.models import resolve_model_path

        sha = encoder_sha256(resolve_model_path(ref))
        if sha != self.lm_sha256:
            raise ArtifactError(
                f"text encoder {ref!r} differs from the one this model was trained "
                f"with (sha256 {sha[:12]} != {self.lm_sha256[:12]})"
            )
        return encode_texts_cached(
            texts,
            ref,
            device=self.device,
            cache_dir=self.cfg.text_cache_dir or None,
            batch_size=self.cfg.text_batch_size,
            max_tokens=self.cfg.text_max_tokens,
        )

    # --- user side --------------------------------------------------------------------------

    def encode_users(
        self, histories: list[list[str]], timestamps: list[list[int]] | None = None
    ) -> np.ndarray:
        """float32 [u, d] user vectors from click histories (oldest first).

        Unknown item ids are skipped; a history with no known item raises RecError.
        """
        seqs, gaps = self._histories_to_idx(histories, timestamps)
        return self.users_from_idx(seqs, gaps).cpu().numpy().astype(np.float32)

    def _histories_to_idx(
        self,
        histories: list[list[str]],
        timestamps: list[list[int]] | list[list[int | None]] | None,
    ) -> tuple[list[list[int]], list[list[int]]]:
        if timestamps is not None and len(timestamps) != len(histories):
            raise DataError(f"{len(timestamps)} timestamp lists for {len(histories)} histories")
        seqs, gaps = [], []
        for u, hist in enumerate(histories):
            ts = timestamps[u] if timestamps is not None else None
            if ts is not None and len(ts) != len(hist):
                raise DataError(f"history {u}: {len(hist)} items but {len(ts)} timestamps")
            keep = [j for j, it in enumerate(hist) if it in self.index]
            if not keep:
                shown = ", ".join(map(str, hist[:3])) + (" ..." if len(hist) > 3 else "")
                raise RecError(
                    f"history {u} has no item known to the model ({shown or 'empty history'})"
                )
            seqs.append([self.index[hist[j]] for j in keep])
            tsk = [ts[j] for j in keep] if ts is not None else None
            gaps.append(
                gap_buckets(tsk[-self.cfg.max_len :], self.cfg.time_buckets)
                if tsk is not None
                else [0] * len(keep)
            )
        return seqs, gaps

    @torch.no_grad()
    def users_from_idx(
        self, seqs: list[list[int]], gaps: list[list[int]], batch: int = 256
    ) -> torch.Tensor:
        """User vectors [u, d] from catalogue-index histories and gap buckets."""
        self.net.eval()
        vecs = self._catalogue_vectors()
        out = []
        for s in range(0, len(seqs), batch):
            items, gp, lens = pad_sequences(
                seqs[s : s + batch], gaps[s : s + batch], self.cfg.max_len
            )
            items, gp, lens = items.to(self.device), gp.to(self.device), lens.to(self.device)
            h = self.net.users(vecs[items], gp)
            out.append(h[torch.arange(len(lens), device=self.device), lens - 1])
        if not out:
            return torch.zeros((0, self.cfg.dim), device=self.device)
        return torch.cat(out)

    # --- scoring ----------------------------------------------------------------------------

    def score_all(
        self, histories: list[list[str]], timestamps: list[list[int]] | None = None
    ) -> np.ndarray:
        """float32 [u, n_items] inner-product scores against the whole catalogue."""
        users = self.encode_users(histories, timestamps)
        return users @ self.item_vectors().T

    def recommend(
        self,
        histories: list[list[str]],
        k: int,
        exclude_seen: bool = True,
        timestamps: list[list[int]] | None = None,
    ) -> tuple[list[list[str]], np.ndarray]:
        """Top-``k`` item ids and scores per history by exact matmul (history items removed)."""
        if k <= 0:
            raise RecError(f"k must be positive, got {k}")
        scores = self.score_all(histories, timestamps)
        if exclude_seen:
            for r, hist in enumerate(histories):
                seen = [self.index[i] for i in hist if i in self.index]
                scores[r, seen] = -np.inf
        k = min(k, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-part, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        ids = [[self.item_ids[j] for j in row] for row in top]
        return ids, np.take_along_axis(scores, top, axis=1).astype(np.float32)

    # --- persistence ------------------------------------------------------------------------

    @property
    def encoder_sha256(self) -> str:
        """sha256 of the item encoder: its config, text encoder, weights and catalogue features."""
        h = hashlib.sha256()
        from rec.config import to_dict

        c = to_dict(self.cfg)
        h.update(json.dumps({k: c[k] for k in ITEM_TOWER_CONFIG_KEYS}, sort_keys=True).encode())
        h.update(self.lm_sha256.encode())
        h.update(json.dumps(self.attr_vocab.to_json(), sort_keys=True).encode())
        for name, t in sorted(self.net.item_tower.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        for t in (self.cat_text, self.cat_ids, self.cat_attrs):
            if t is not None:
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def save(self, out_dir: str | Path, lm_model: Any | None = None) -> Path:
        """Write the model directory atomically; ``lm_model`` is a tuned sentence encoder."""
        from safetensors.torch import save_file

        from rec.config import to_dict

        out = Path(out_dir)
        with atomic_dir(out) as tmp:
            state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
            save_file(state, str(tmp / "weights.safetensors"))
            cat = {
                "ids": self.cat_ids.cpu(),
                "attrs": self.cat_attrs.cpu(),
                "item_vectors": self._catalogue_vectors().cpu().contiguous(),
            }
            if self.cat_text is not None:
                cat["text"] = self.cat_text.cpu().contiguous()
            save_file(cat, str(tmp / "catalogue.safetensors"))
            lm_ref = self.lm_ref
            if lm_model is not None:
                lm_model.save(str(tmp / "encoder"))
                lm_ref = "encoder"
                self.lm_sha256 = encoder_sha256(str(tmp / "encoder"))
            write_json(
                tmp / "model.json",
                {
                    "format": FORMAT,
                    "config": to_dict(self.cfg),
                    "item_ids": self.item_ids,
                    "text_keys": self.text_keys,
                    "attr_vocab": self.attr_vocab.to_json(),
                    "text_dim": int(self.cat_text.shape[1]) if self.cat_text is not None else 0,
                    "n_ids": int(self.net.item_tower.id_emb.num_embeddings - 1)
                    if hasattr(self.net.item_tower, "id_emb")
                    else 0,
                    "n_attr": len(self.attr_vocab.tokens),
                    "text_encoder": {"ref": lm_ref, "sha256": self.lm_sha256},
                    "encoder_sha256": self.encoder_sha256,
                    "metric": self.metric,
                    "info": self.info,
                },
            )
        encoder_sha256.cache_clear()
        self.model_dir = out
        if lm_model is not None:
            self.lm_ref = str(out / "encoder")
        return out

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "cpu") -> RetrievalModel:
        """Load a model directory written by ``save`` (refuses a corrupt or foreign one)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from rec.config import from_dict

        d = Path(model_dir)
        if not (d / "model.json").is_file():
            raise ArtifactError(f"{d}: not a retrieval model directory (no model.json)")
        meta = read_json(d / "model.json")
        if meta.get("format") != FORMAT:
            raise ArtifactError(f"{d}: unsupported retrieval model format {meta.get('format')!r}")
        cfg = from_dict(RetrievalConfig, meta["config"])
        try:
            state = load_file(str(d / "weights.safetensors"))
            cat = load_file(str(d / "catalogue.safetensors"))
        except (OSError, SafetensorError) as exc:
            raise ArtifactError(f"{d}: unreadable weights ({exc})") from None
        net = TwoTowerNet(cfg, int(meta["text_dim"]) or 1, int(meta["n_ids"]), int(meta["n_attr"]))
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ArtifactError(
                f"{d}: weights do not match model.json ({str(exc).splitlines()[0]})"
            ) from None
        enc = meta["text_encoder"]
        lm_ref = str(d / "encoder") if enc["ref"] == "encoder" else enc["ref"]
        model = cls(
            cfg,
            meta["item_ids"],
            net,
            AttrVocab.from_json(meta["attr_vocab"]),
            cat.get("text"),
            cat["ids"],
            cat["attrs"],
            meta["text_keys"],
            lm_ref,
            enc["sha256"],
            device=device,
            info=meta.get("info"),
        )
        model.model_dir = d
        if model.encoder_sha256 != meta["encoder_sha256"]:
            raise ArtifactError(f"{d}: item encoder hash mismatch (files changed after saving)")
        model._item_vecs = cat["item_vectors"].to(device)
        return model
