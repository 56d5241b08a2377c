"""The `rec` command line: one click group, thin commands over the library.

stdout carries results (JSON lines by default); logs and progress go to stderr. A RecError
becomes one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from rec.errors import RecError


def run_dir_option(required: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--run-dir`` (env REC_RUN_DIR)."""
    return click.option(
        "--run-dir",
        "run_dir",
        envvar="REC_RUN_DIR",
        required=required,
        type=click.Path(file_okay=False),
        help="Run directory (env REC_RUN_DIR).",
    )


def config_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--config FILE`` and repeatable ``--set section.key=value``."""
    f = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="SECTION.KEY=VALUE",
        help="Override one config value (repeatable).",
    )(f)
    f = click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file."
    )(f)
    return f


def device_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--device auto|cpu|cuda[:N]`` (env REC_DEVICE)."""
    return click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.")(f)


def format_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--format json|table``."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["json", "table"]),
        default="json",
        show_default=True,
        help="JSON lines for scripts, a table for people.",
    )(f)


def emit_rows(rows: list[dict[str, Any]], fmt: str) -> None:
    """Print rows as JSON lines or an aligned table on stdout."""
    import json

    if fmt == "json":
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False, default=str))
        return
    if not rows:
        return
    cols = list(rows[0])
    cells = [[_fmt_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _fmt_cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "" if v is None else str(v)


def handle_errors(f: Callable[..., Any]) -> Callable[..., Any]:
    """Turn domain errors into one stderr line and an exit code."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except RecError as exc:
            click.echo(f"rec: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("rec: interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rec")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """rec: predict what a person clicks next and recommend it."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@cli.group()
def train() -> None:
    """Train a stage: retrieval or reranker."""


def _register() -> None:
    """Import the command modules; each attaches its commands to ``cli`` or ``train``."""
    import importlib

    for mod in ("data", "retrieval", "index", "ranking", "evaluate", "run", "serve"):
        try:
            importlib.import_module(f"rec.cli.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"rec.cli.{mod}":
                raise


def main() -> None:
    """Console-script entry point."""
    _register()
    cli(prog_name="rec")
