"""Item text -> vectors with a pretrained sentence-transformers encoder, cached on disk.

The cache is keyed by the encoder's sha256 (config + weights) and the sha256 of each text, so a
rebuild encodes only new or changed item texts. Cache shards are ``.npz`` files read with
``allow_pickle=False``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from rec.artifacts import atomic_path, sha256_tree
from rec.errors import ConfigError
from rec.models import resolve_model_path

log = logging.getLogger(__name__)


def text_key(text: str) -> str:
    """sha256 of one item text (the cache key)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=16)
def encoder_sha256(resolved: str) -> str:
    """sha256 over the files of a local encoder directory (or of the name of a hub model)."""
    p = Path(resolved)
    if p.is_dir():
        return sha256_tree(p)
    return hashlib.sha256(f"hub:{resolved}".encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$REC_CACHE_DIR/text-emb``, else ``~/.cache/rec/text-emb``."""
    root = os.environ.get("REC_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "rec") / "text-emb"


def load_sentence_transformer(name: str, device: str = "cpu", max_tokens: int = 64) -> Any:
    """Load a sentence-transformers model from a reference understood by resolve_model_path."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model_path(name)
    try:
        model = SentenceTransformer(path, device=device)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load text encoder {name!r}: {str(exc).splitlines()[0]}"
        ) from None
    current = getattr(model, "max_seq_length", None)
    if current:
        try:
            model.max_seq_length = min(current, max_tokens)
        except AttributeError:  # e.g. StaticEmbedding has no length limit to set
            pass
    return model


class TextEmbeddingCache:
    """On-disk store of text vectors for one encoder: ``ROOT/<encoder sha[:24]>/*.npz``."""

    def __init__(self, root: str | Path, encoder_sha: str) -> None:
        self.dir = Path(root) / encoder_sha[:24]
        self._vecs: dict[str, np.ndarray] = {}
        if self.dir.is_dir():
            for shard in sorted(self.dir.glob("*.npz")):
                try:
                    with np.load(shard, allow_pickle=False) as z:
                        for k, v in zip(z["keys"].tolist(), z["vecs"]):
                            self._vecs[k] = v
                except (OSError, ValueError, KeyError) as exc:
                    log.warning("ignoring unreadable text cache shard %s: %s", shard, exc)

    def lookup(self, keys: list[str]) -> tuple[dict[int, np.ndarray], list[int]]:
        """Found vectors by position, and the positions of missing keys."""
        found, missing = {}, []
        for i, k in enumerate(keys):
            v = self._vecs.get(k)
            if v is None:
                missing.append(i)
            else:
                found[i] = v
        return found, missing

    def add(self, keys: list[str], vecs: np.ndarray) -> None:
        """Store new vectors as one more shard (atomic write)."""
        if not keys:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        name = self.dir / f"{time.time_ns()}-{os.getpid()}.npz"
        with atomic_path(name) as tmp:
            with tmp.open("wb") as fh:
                np.savez(fh, keys=np.array(keys, dtype="U64"), vecs=vecs.astype(np.float32))
        for k, v in zip(keys, vecs):
            self._vecs[k] = v


def encode_texts(
    model: Any, texts: list[str], batch_size: int = 64, progress: bool = False
) -> np.ndarray:
    """Encode texts with a loaded sentence-transformers model (no cache) -> float32 [n, t]."""
    if not texts:
        dim = model.get_sentence_embedding_dimension() or 0
        return np.zeros((0, dim), dtype=np.float32)
    out = model.encode(
        texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=progress
    )
    return np.asarray(out, dtype=np.float32)


def encode_texts_cached(
    texts: list[str],
    encoder: str,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    max_tokens: int = 64,
    model: Any | None = None,
) -> np.ndarray:
    """Vectors for ``texts`` with the frozen encoder ``encoder``; only uncached texts are encoded."""
    resolved = resolve_model_path(encoder)
    sha = encoder_sha256(resolved)
    cache = TextEmbeddingCache(
        cache_dir or default_cache_dir(), hashlib.sha256(f"{sha}:{max_tokens}".encode()).hexdigest()
    )
    keys = [text_key(t) for t in texts]
    found, missing = cache.lookup(keys)
    if missing:
        log.info("encoding %d of %d item texts (%d cached)", len(missing), len(texts), len(found))
        model = model or load_sentence_transformer(encoder, device, max_tokens)
        uniq = sorted({keys[i]: i for i in missing}.items())
        new = encode_texts(
            model, [texts[i] for _, i in uniq], batch_size, progress=len(uniq) > 2000
        )
        cache.add([k for k, _ in uniq], new)
        found, missing = cache.lookup(keys)
    return np.stack([found[i] for i in range(len(texts))]).astype(np.float32)
