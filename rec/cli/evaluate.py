"""`rec evaluate` (a run's stages and floors) and `rec baselines` (floors on a prepared dataset)."""

from __future__ import annotations

from typing import Any

import click

from rec.cli import cli, emit_rows, format_option, handle_errors, run_dir_option


def _rows(metrics: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per stage: stage, recall@K, ndcg@K, mrr, (ceiling), n_users."""
    ceiling = any("ceiling" in m for m in metrics.values())
    rows = []
    for stage, m in metrics.items():
        row: dict[str, Any] = {"stage": stage}
        row.update({k: v for k, v in m.items() if k not in ("n_users", "ceiling")})
        if ceiling:  # the same columns in every row (tables take them from the first)
            row["ceiling"] = m.get("ceiling")
        row["n_users"] = m.get("n_users")
        rows.append(row)
    return rows


@cli.command("evaluate")
@run_dir_option()
@click.option("--split", type=click.Choice(["test", "valid"]), default="test", show_default=True)
@click.option(
    "--export-rankings",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write each evaluated user's top-100 per stage to this Parquet file.",
)
@click.option(
    "--sampled-negatives",
    type=int,
    default=None,
    metavar="N",
    help="Also report SAMPLED metrics with N uniform negatives (labelled; not "
    "comparable with full ranking).",
)
@click.option(
    "--stage",
    "stages",
    multiple=True,
    type=click.Choice(["retrieval", "retrieval_ann", "reranked"]),
    help="Model stages to evaluate (repeatable; default: all present).",
)
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.")
@format_option
@handle_errors
def evaluate_cmd(
    run_dir: str,
    split: str,
    export_rankings: str | None,
    sampled_negatives: int | None,
    stages: tuple[str, ...],
    device: str | None,
    fmt: str,
) -> None:
    """Rank every user's leave-one-out target with the floors and the run's stages; write
    RUN/eval (metrics.json, details.json, report.md, plots)."""
    from rec.pipeline.evaluate import evaluate_run

    metrics = evaluate_run(
        run_dir,
        split=split,
        export_rankings=export_rankings,
        sampled=sampled_negatives,
        stages=stages or None,
        device=device,
        progress=True,
    )
    emit_rows(_rows(metrics), fmt)


@cli.command("baselines")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Prepared canonical dataset directory.",
)
@click.option("--split", type=click.Choice(["test", "valid"]), default="test", show_default=True)
@click.option("--no-filter-seen", is_flag=True, help="Keep history items in the ranking.")
@click.option("--knn", type=click.Choice(["ease", "itemknn"]), default="ease", show_default=True)
@click.option(
    "--sampled-negatives",
    type=int,
    default=None,
    metavar="N",
    help="Also report SAMPLED metrics with N uniform negatives (labelled).",
)
@format_option
@handle_errors
def baselines_cmd(
    data_dir: str,
    split: str,
    no_filter_seen: bool,
    knn: str,
    sampled_negatives: int | None,
    fmt: str,
) -> None:
    """Floors only (most-popular, EASE or item-kNN, Markov) on a prepared dataset, no run."""
    from eval.config import EvalConfig
    from eval.evaluate import metrics_dict
    from rec.pipeline.evaluate import evaluate_baselines

    cfg = EvalConfig(filter_seen=not no_filter_seen, baseline_knn=knn)
    results, protocol, _, _ = evaluate_baselines(
        data_dir, split, cfg=cfg, sampled=sampled_negatives, progress=True
    )
    rows = _rows(metrics_dict(results))
    for row in rows:
        info = results[row["stage"]].info
        row["ndcg@10_ci95"] = [round(x, 4) for x in info.get("ndcg@10_ci95", [])]
        row["filter_seen"] = info.get("filter_seen")
        row["ease_lambda"] = info.get("ease_lambda")
    emit_rows(rows, fmt)
