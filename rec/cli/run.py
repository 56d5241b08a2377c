"""`rec run`: the whole pipeline in one command."""

from __future__ import annotations

import json

import click

from rec.cli import cli, config_options, device_option, handle_errors
from rec.errors import ConfigError


@cli.command("run")
@config_options
@click.option("--dataset", default=None, help="Use the shipped configs/NAME.toml.")
@click.option(
    "--run-dir",
    "run_dir",
    envvar="REC_RUN_DIR",
    type=click.Path(file_okay=False),
    help="Run directory (default runs/<config name>).",
)
@device_option
@handle_errors
def run_cmd(
    config_path: str | None,
    overrides: tuple[str, ...],
    dataset: str | None,
    run_dir: str | None,
    device: str | None,
) -> None:
    """Prepare -> train retrieval -> build index -> train reranker -> evaluate -> report."""
    from rec.pipeline.run import dataset_config, resolve_run_config, run_pipeline

    if config_path and dataset:
        raise ConfigError("give --config or --dataset, not both")
    if dataset:
        config_path = str(dataset_config(dataset))
    if device:
        overrides = (*overrides, f"device={device}")
    cfg = resolve_run_config(config_path, overrides, run_dir)
    result = run_pipeline(cfg, run_dir or f"runs/{cfg.name}")
    click.echo(json.dumps(result, default=str))
