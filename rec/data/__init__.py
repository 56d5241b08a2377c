"""Data layer (polars only): loaders, cleaning, item text, splits, the canonical dataset."""

from rec.data.dataset import (
    Dataset,
    Split,
    histories_for,
    leave_one_out,
    load_dataset,
    load_split,
    save_dataset,
    sequences,
    sort_events,
    temporal_split,
)

__all__ = [
    "Dataset",
    "Split",
    "histories_for",
    "leave_one_out",
    "load_dataset",
    "load_split",
    "save_dataset",
    "sequences",
    "sort_events",
    "temporal_split",
]
