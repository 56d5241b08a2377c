"""Resolve the compute device once, at the edge: "auto" -> "cuda:0" or "cpu" (env REC_DEVICE overrides)."""

from __future__ import annotations

import logging
import os

from rec.errors import ConfigError

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> str:
    """Return a concrete torch device string for ``device`` ("auto", "cpu", "cuda", "cuda:N", "mps").

    ``REC_DEVICE`` in the environment takes precedence over "auto".
    """
    import torch

    if device == "auto":
        device = os.environ.get("REC_DEVICE", "auto")
    if device == "auto":
        resolved = "cuda:0" if torch.cuda.is_available() else "cpu"
        log.info("device auto -> %s", resolved)
        return resolved
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but no CUDA GPU is available")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    return device
