"""Test set-up: offline, deterministic, tiny. Shared fixtures live in tests/fixtures_*.py plugins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]

# Each stage's shared fixtures are a plugin module of its own (tests/fixtures_<stage>.py).
pytest_plugins = [
    p
    for p in ("tests.fixtures_data", "tests.fixtures_models", "tests.fixtures_ranking")
    if (REPO / (p.replace(".", "/") + ".py")).exists()
]


def shared_data_dir() -> Path | None:
    """The real datasets folder (REC_DATA_DIR, else ../shared/data next to the repo), or None."""
    env = os.environ.get("REC_DATA_DIR")
    cand = Path(env) if env else REPO.parent / "shared" / "data"
    return cand if cand.is_dir() else None


@pytest.fixture
def real_data() -> Path:
    """Path to ../shared/data; skips the test with a clear reason when it is absent."""
    d = shared_data_dir()
    if d is None:
        pytest.skip("real datasets not found: set REC_DATA_DIR or provide ../shared/data")
    return d


@pytest.fixture
def synth_dataset_dir(tmp_path: Path) -> Path:
    """A small canonical dataset with planted clusters, written to a temp dir."""
    from rec.data import save_dataset
    from rec.data.synthetic import synthetic_dataset

    inter, items, split = synthetic_dataset(n_users=200, n_items=120, seed=0)
    return save_dataset(tmp_path / "synth", inter, items, {"source": "synthetic"}, splits=[split])
