"""The one-command pipeline: prepare -> train retrieval -> build index -> train reranker -> evaluate."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from rec.artifacts import RunDir
from rec.config import RunConfig, load_config, read_toml
from rec.device import resolve_device
from rec.errors import ConfigError

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def dataset_config(name: str) -> Path:
    """The shipped config for a dataset name (``configs/NAME.toml``)."""
    p = CONFIG_DIR / f"{name}.toml"
    if not p.is_file():
        known = ", ".join(sorted(q.stem for q in CONFIG_DIR.glob("*.toml"))) or "none"
        raise ConfigError(f"no shipped config for dataset {name!r} (known: {known})")
    return p


def resolve_run_config(
    config_path: str | Path | None,
    overrides: tuple[str, ...] = (),
    run_dir: str | Path | None = None,
) -> RunConfig:
    """Config of a run: the run's own config.toml (when resuming) <- FILE <- --set."""
    base: dict[str, Any] = {}
    if run_dir is not None and RunDir(run_dir).config_path.is_file():
        base = read_toml(RunDir(run_dir).config_path)
    return load_config(config_path, overrides, base=base)


def run_pipeline(cfg: RunConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run every stage in ``cfg.stages`` into ``run_dir``; return the final metrics (if evaluated).

    Each stage writes its own part atomically and records it in the manifest, so a crash keeps
    the stages that finished; rerunning repeats only what is asked.
    """
    run = RunDir(run_dir)
    device = resolve_device(cfg.device)
    timings: dict[str, float] = {}
    if not cfg.data.dataset_dir:
        cfg = _with_dataset_dir(cfg, str(run.stage("data")))
    run.update_manifest(config=cfg)
    metrics: dict[str, Any] = {}
    for stage in cfg.stages:
        t0 = time.perf_counter()
        log.warning("rec run: stage %s ...", stage)
        if stage == "prepare":
            from rec.data.prepare import prepare_dataset

            prepare_dataset(cfg.data, cfg.data.dataset_dir)
            run.update_manifest(info={"dataset_dir": cfg.data.dataset_dir})
        elif stage == "retrieval":
            from retrieval.train import train_retrieval

            m = train_retrieval(
                cfg.data.dataset_dir,
                run.stage("retrieval"),
                cfg.retrieval,
                seed=cfg.seed,
                device=device,
            )
            run.update_manifest(part="retrieval", metrics={"retrieval_train": m})
        elif stage == "index":
            from rec.pipeline.index import build_index

            build_index(run.path)
        elif stage == "ranking":
            from rec.pipeline.rank import train_reranker

            train_reranker(run.path, device=device)
        elif stage == "evaluate":
            from rec.pipeline.evaluate import evaluate_run

            metrics = evaluate_run(run.path, split="test")
        timings[stage] = round(time.perf_counter() - t0, 1)
        log.warning("rec run: stage %s done in %.1f s", stage, timings[stage])
        run.update_manifest(metrics={"timings_s": dict(timings)})
    return {"run_dir": str(run.path), "timings_s": timings, "metrics": metrics}


def _with_dataset_dir(cfg: RunConfig, path: str) -> RunConfig:
    import dataclasses

    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset_dir=path))
