"""`rec build-index`, `rec retrieve`, `rec index add`, `rec index remove`."""

from __future__ import annotations

import click

from rec.cli import cli, device_option, emit_rows, format_option, handle_errors, run_dir_option


@cli.command("build-index")
@run_dir_option()
@device_option
@handle_errors
def build_index_cmd(run_dir: str, device: str | None) -> None:
    """Encode every catalogue item with the run's item tower and build RUN/index."""
    from rec.pipeline.index import build_index

    info = build_index(run_dir, device=device)
    emit_rows(
        [
            {
                k: info[k]
                for k in (
                    "path",
                    "factory",
                    "metric",
                    "dim",
                    "ntotal",
                    "use_gpu",
                    "encode_s",
                    "build_s",
                )
            }
        ],
        "json",
    )


@cli.command("retrieve")
@run_dir_option()
@click.option("--user", default=None, help="A user id of the run's dataset (whole history).")
@click.option(
    "--history",
    default=None,
    metavar="ITEM,ITEM,...",
    help="Item ids in time order, for a user the dataset does not know.",
)
@click.option("-k", "--k", "k", type=int, default=100, show_default=True, help="Items to return.")
@format_option
@device_option
@handle_errors
def retrieve_cmd(
    run_dir: str, user: str | None, history: str | None, k: int, fmt: str, device: str | None
) -> None:
    """Top-k items for a user from the index (items already in the history are left out)."""
    from rec.pipeline.index import retrieve

    items = None if history is None else [h for h in history.split(",") if h.strip()]
    emit_rows(retrieve(run_dir, user=user, history=items, k=k, device=device), fmt)


@cli.group("index")
def index_group() -> None:
    """Change the run's index without rebuilding it: add or remove items."""


@index_group.command("add")
@run_dir_option()
@click.option(
    "--items",
    "items_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="JSON lines, Parquet or CSV with item_id, text (and title).",
)
@device_option
@handle_errors
def add_cmd(run_dir: str, items_file: str, device: str | None) -> None:
    """Encode new items from their text (no retraining) and add or replace them."""
    from rec.pipeline.index import add_items

    emit_rows([add_items(run_dir, items_file, device=device)], "json")


@index_group.command("remove")
@run_dir_option()
@click.option("--items", "items", required=True, metavar="ID,ID,...", help="Item ids to remove.")
@device_option
@handle_errors
def remove_cmd(run_dir: str, items: str, device: str | None) -> None:
    """Remove items from the index by id."""
    from rec.pipeline.index import remove_items

    emit_rows([remove_items(run_dir, items.split(","), device=device)], "json")
