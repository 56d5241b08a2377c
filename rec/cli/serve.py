"""`rec serve`: the HTTP API of rec.serve over a run directory (uvicorn)."""

from __future__ import annotations

import os

import click

from rec.cli import cli, device_option, handle_errors, run_dir_option


@cli.command("serve")
@run_dir_option()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Worker processes; each loads the models once.",
)
@device_option
@handle_errors
def serve_cmd(run_dir: str, host: str, port: int, workers: int, device: str | None) -> None:
    """Serve recommendations over HTTP: /health, /recommend, /retrieve, /items."""
    import uvicorn

    from rec.serve import check_run, create_app

    if workers == 1:  # load here, so a broken run is one error line before anything binds
        uvicorn.run(create_app(run_dir, device=device), host=host, port=port)
        return
    check_run(run_dir)
    os.environ["REC_RUN_DIR"] = run_dir  # read by each worker's app_from_env
    if device:
        os.environ["REC_DEVICE"] = device
    uvicorn.run("rec.serve:app_from_env", factory=True, host=host, port=port, workers=workers)
