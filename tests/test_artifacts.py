"""Atomic writes and run-directory manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

from rec.artifacts import RunDir, atomic_dir, read_json, sha256_tree, write_json
from rec.config import load_config
from rec.errors import ArtifactError


def test_atomic_dir_keeps_old_content_on_crash(tmp_path: Path) -> None:
    target = tmp_path / "part"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("good")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("crash")
    assert (target / "a.txt").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["part"]


def test_write_json_replaces_and_read_json_reports(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    write_json(p, {"a": 1})
    write_json(p, {"a": 2})
    assert read_json(p) == {"a": 2}
    p.write_text("{broken")
    with pytest.raises(ArtifactError, match="corrupt JSON"):
        read_json(p)
    with pytest.raises(ArtifactError, match="not found"):
        read_json(tmp_path / "missing.json")


def test_manifest_records_config_parts_and_metrics(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    with pytest.raises(ArtifactError, match="run directory not found"):
        run.require()
    cfg = load_config(overrides=["seed=3"])
    (run.path / "retrieval").mkdir(parents=True)
    (run.path / "retrieval" / "w.bin").write_bytes(b"abc")
    run.update_manifest(config=cfg, part="retrieval", info={"dim": 8}, metrics={"m": 1.0})
    m = run.manifest()
    assert m["config"]["seed"] == 3 and m["config_hash"]
    assert m["parts"]["retrieval"]["sha256"] == sha256_tree(run.path / "retrieval")
    assert m["parts"]["retrieval"]["dim"] == 8
    assert run.config() == cfg
    assert load_config(run.config_path) == cfg
    with pytest.raises(ArtifactError, match="stage 'index' missing"):
        run.require_stage("index", "index.json")
