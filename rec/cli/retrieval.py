"""`rec train retrieval`: train the two-tower model of a run."""

from __future__ import annotations

from pathlib import Path

import click

from rec.cli import (
    config_options,
    device_option,
    emit_rows,
    format_option,
    handle_errors,
    run_dir_option,
    train,
)


@train.command("retrieval")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Prepared canonical dataset directory.",
)
@run_dir_option()
@config_options
@device_option
@format_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def train_retrieval_cmd(
    data_dir: str,
    run_dir: str,
    config_path: str | None,
    overrides: tuple[str, ...],
    device: str | None,
    fmt: str,
    quiet: bool,
) -> None:
    """Train the two-tower retrieval model on DATA into RUN/retrieval."""
    from rec.artifacts import RunDir
    from rec.config import load_config, read_toml
    from retrieval.train import train_retrieval

    run = RunDir(run_dir)
    base = read_toml(run.config_path) if run.config_path.is_file() else None
    extra = [f"data.dataset_dir={_toml_str(data_dir)}"]
    if device:
        extra.append(f"device={_toml_str(device)}")
    cfg = load_config(config_path, [*overrides, *extra], base=base)
    metrics = train_retrieval(
        data_dir,
        run.stage("retrieval"),
        cfg.retrieval,
        seed=cfg.seed,
        device=cfg.device,
        progress=not quiet,
    )
    summary = {"valid_" + k: v for k, v in metrics["valid"].items() if k != "filter_seen"}
    run.update_manifest(
        config=cfg,
        part="retrieval",
        info={
            "best_epoch": metrics["best_epoch"],
            "train_seconds": metrics["train_seconds"],
            "loss": metrics["loss"],
            "n_items": metrics["n_items"],
        },
        metrics={"retrieval": summary},
    )
    emit_rows(
        [
            {
                "stage": "retrieval",
                "model_dir": str(Path(run_dir) / "retrieval"),
                "best_epoch": metrics["best_epoch"],
                "train_seconds": metrics["train_seconds"],
                **summary,
            }
        ],
        fmt,
    )


def _toml_str(s: str) -> str:
    import json

    return json.dumps(str(s))
