"""`rec data ...`: prepare a canonical dataset, show its statistics, download public datasets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from rec.cli import cli, config_options, emit_rows, format_option, handle_errors
from rec.errors import DataError


@cli.group("data")
def data() -> None:
    """Prepare, inspect and download datasets."""


@data.command("prepare")
@click.option(
    "--format",
    "data_format",
    default=None,
    metavar="FORMAT",
    help="movielens-100k, movielens-1m, movielens-latest, amazon, atomic, csv, parquet "
    "(overrides data.format).",
)
@click.option(
    "--input",
    "input_path",
    default=None,
    metavar="PATH",
    help="Raw file or folder (overrides data.input); relative paths that do not exist "
    "are looked up in REC_DATA_DIR.",
)
@click.option(
    "--out",
    "out_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Dataset directory to write (replaced atomically).",
)
@click.option(
    "--run-dir",
    "run_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Write into RUN/data instead and record it in the run's manifest.",
)
@config_options
@handle_errors
def prepare(
    data_format: str | None,
    input_path: str | None,
    out_dir: str | None,
    run_dir: str | None,
    config_path: str | None,
    overrides: tuple[str, ...],
) -> None:
    """Turn a raw source into the canonical dataset (interactions, items, splits)."""
    from rec.artifacts import RunDir, read_json
    from rec.config import load_config
    from rec.data.prepare import prepare_dataset

    run_cfg = load_config(config_path, overrides)
    changes = {k: v for k, v in (("format", data_format), ("input", input_path)) if v}
    cfg = dataclasses.replace(run_cfg.data, **changes)
    if out_dir is None and run_dir is None:
        raise DataError("give --out DIR or --run-dir RUN")
    run = RunDir(run_dir) if run_dir is not None and out_dir is None else None
    if run is not None:  # data.dataset_dir if set, else RUN/data (as `rec run` does)
        out = Path(cfg.dataset_dir) if cfg.dataset_dir else run.stage("data")
        cfg = dataclasses.replace(cfg, dataset_dir=str(out))
    else:
        out = Path(out_dir)  # type: ignore[arg-type]
    path = prepare_dataset(cfg, out)
    meta = read_json(path / "dataset.json")
    if run is not None:
        run.update_manifest(
            config=dataclasses.replace(run_cfg, data=cfg),
            part="data" if out == run.stage("data") else None,
            info={"dataset_dir": str(out), "counts": meta["counts"]},
        )
    emit_rows(
        [{"dataset": str(path), "format": cfg.format, **meta["counts"], "splits": meta["splits"]}],
        "json",
    )


@data.command("stats")
@click.argument("data_dir", type=click.Path())
@format_option
@handle_errors
def stats(data_dir: str, fmt: str) -> None:
    """Users, items, events, density, history lengths, text coverage, time range."""
    from rec.data.stats import dataset_stats

    s = dataset_stats(data_dir)
    if fmt == "json":
        emit_rows([s], "json")
    else:
        emit_rows([{"stat": k, "value": v} for k, v in s.items()], "table")


@data.command("download")
@click.argument("name")
@click.option("--force", is_flag=True, help="Download again even when cached.")
@handle_errors
def download(name: str, force: bool) -> None:
    """Fetch ml-100k, ml-1m or ml-latest-small from files.grouplens.org (sha256-verified) into
    REC_CACHE_DIR (default ~/.cache/rec/data)."""
    from rec.data.download import DATASETS, download_dataset

    path = download_dataset(name, force=force)
    fmt = DATASETS[name]["format"]
    emit_rows(
        [
            {
                "name": name,
                "path": str(path),
                "format": fmt,
                "next": f"rec data prepare --format {fmt} --input {path} --out DIR",
            }
        ],
        "json",
    )
