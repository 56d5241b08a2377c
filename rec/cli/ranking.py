"""`rec train reranker`, `rec rerank`, `rec recommend`, `rec evaluate-reranker`."""

from __future__ import annotations

import json
import sys

import click

from rec.cli import (
    cli,
    config_options,
    device_option,
    emit_rows,
    format_option,
    handle_errors,
    run_dir_option,
    train,
)
from rec.errors import DataError

SOURCE = click.option(
    "--source",
    type=click.Choice(["auto", "retrieval", "cooccurrence"]),
    default="auto",
    show_default=True,
    help="First stage: the run's retriever (auto when present) or co-occurrence.",
)
QUANTIZE = click.option(
    "--quantize",
    type=click.Choice(["none", "int8"]),
    default=None,
    help="CPU serving path (default: ranking.quantize of the run).",
)
HISTORY = click.option(
    "--history",
    multiple=True,
    metavar="ITEM[,ITEM...]",
    help="History item ids in time order (overrides the user's stored one).",
)


def _device(device: str | None) -> str:
    from rec.device import resolve_device

    return resolve_device(device or "auto")


def _history(values: tuple[str, ...]) -> list[str] | None:
    items = [x.strip() for v in values for x in v.split(",") if x.strip()]
    return items or None


@train.command("reranker")
@run_dir_option()
@config_options
@SOURCE
@click.option(
    "--recalibrate",
    is_flag=True,
    help="Keep the trained model; refit only its calibrator on validation lists of "
    "the current first stage.",
)
@device_option
@handle_errors
def train_reranker_cmd(
    run_dir: str,
    config_path: str | None,
    overrides: tuple[str, ...],
    source: str,
    recalibrate: bool,
    device: str | None,
) -> None:
    """Fine-tune the cross-encoder reranker into RUN/ranking and calibrate it on validation."""
    from rec.pipeline.rank import recalibrate_reranker, train_reranker
    from rec.pipeline.run import resolve_run_config

    cfg = resolve_run_config(config_path, overrides, run_dir)
    dev = _device(device or cfg.device)
    if recalibrate:
        report = recalibrate_reranker(run_dir, source, cfg.ranking.valid_users, dev)
        emit_rows([{"run_dir": run_dir, "recalibrated": True, "valid": report}], "json")
        return
    summary = train_reranker(run_dir, device=dev, cfg=cfg, source=source)
    emit_rows([{"run_dir": run_dir, **summary}], "json")


@cli.command("rerank")
@run_dir_option()
@click.option("--user", required=True, help="User id.")
@click.option(
    "--candidates",
    "cand_path",
    default=None,
    metavar="FILE|-",
    help="JSON lines with item_id (default: the retriever's top ranking.rerank_top).",
)
@HISTORY
@QUANTIZE
@device_option
@format_option
@handle_errors
def rerank_cmd(
    run_dir: str,
    user: str,
    cand_path: str | None,
    history: tuple[str, ...],
    quantize: str | None,
    device: str | None,
    fmt: str,
) -> None:
    """Score candidates for a user with calibrated click probabilities, best first."""
    from rec.pipeline.rank import rerank

    candidates = _read_candidates(cand_path) if cand_path else None
    rows = rerank(run_dir, user, candidates, _history(history), _device(device), quantize)
    emit_rows(rows, fmt)


@cli.command("recommend")
@run_dir_option()
@click.option("--user", required=True, help="User id.")
@click.option("-k", "k", default=10, show_default=True, type=int, help="How many items.")
@HISTORY
@QUANTIZE
@device_option
@format_option
@handle_errors
def recommend_cmd(
    run_dir: str,
    user: str,
    k: int,
    history: tuple[str, ...],
    quantize: str | None,
    device: str | None,
    fmt: str,
) -> None:
    """Retrieve, rerank and print rank, item_id, title, click probability."""
    from rec.pipeline.rank import recommend

    rows = recommend(run_dir, user, k, _history(history), _device(device), quantize)
    emit_rows(rows, fmt)


@cli.command("evaluate-reranker")
@run_dir_option()
@click.option("--part", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option(
    "--max-users",
    default=0,
    show_default=True,
    type=int,
    help="Evaluate a random subset of users (0 = all); same users for both stages.",
)
@click.option("--seed", default=0, show_default=True, type=int)
@SOURCE
@QUANTIZE
@device_option
@handle_errors
def evaluate_reranker_cmd(
    run_dir: str,
    part: str,
    max_users: int,
    seed: int,
    source: str,
    quantize: str | None,
    device: str | None,
) -> None:
    """Retrieval alone vs retrieve + rerank (NDCG@10, HR@10), ceiling and calibration."""
    from rec.pipeline.rank import evaluate_reranker

    out = evaluate_reranker(run_dir, part, max_users, seed, _device(device), quantize, source)
    emit_rows([out], "json")


def _read_candidates(path: str) -> list[str]:
    fh = sys.stdin if path == "-" else None
    try:
        text = fh.read() if fh else open(path, encoding="utf-8").read()  # noqa: SIM115
    except OSError as exc:
        raise DataError(f"cannot read candidates: {exc.strerror}", path) from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append(str(row["item_id"]) if isinstance(row, dict) else str(row))
        except (json.JSONDecodeError, KeyError):
            raise DataError("expected a JSON object with item_id", path, n) from None
    if not out:
        raise DataError("no candidates given", path)
    return out
