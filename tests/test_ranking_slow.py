"""Slow tests of the ranking stage: the packaged MiniLM as a cross-encoder, real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_minilm_cross_encoder_int8_close_to_fp32():
    from ranking.config import RankingConfig
    from ranking.model import CrossEncoder, quantize_int8
    from rec.models import resolve_model_path

    cfg = RankingConfig(num_layers=3)
    enc = CrossEncoder.from_pretrained(resolve_model_path(cfg.model), cfg)
    hist = [["Toy Story (1995)", "Heat (1995)"]] * 8
    cands = [f"Movie {i} (1999). Genres: Drama." for i in range(8)]
    a = enc.logits(hist, cands)
    enc.model = quantize_int8(enc.model.eval())
    b = enc.logits(hist, cands)
    assert a.shape == b.shape == (8,)
    assert np.abs(a - b).max() < 0.5


def test_train_minilm_on_real_data_smoke(tmp_path: Path):
    d = Path("/work/prepared/ml-100k")
    if not (d / "dataset.json").is_file():
        pytest.skip("prepared ml-100k not found")
    from rec.artifacts import RunDir
    from rec.config import load_config
    from rec.pipeline.rank import train_reranker

    cfg = load_config(
        None,
        (
            f'data.dataset_dir="{d}"',
            "ranking.max_steps=4",
            "ranking.valid_users=20",
            "ranking.rerank_top=10",
        ),
    )
    RunDir(tmp_path / "run").update_manifest(config=cfg)
    out = train_reranker(tmp_path / "run", device="cpu", progress=False)
    assert out["steps"] == 4
