"""Explicit configuration: frozen dataclasses per stage, one RunConfig, TOML files and --set overrides.

Unknown keys and wrong types are errors. ``config_hash`` identifies a resolved configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from eval.config import EvalConfig
from index.config import IndexConfig
from ranking.config import RankingConfig
from rec.errors import ConfigError
from retrieval.config import RetrievalConfig

T = TypeVar("T")


@dataclass(frozen=True)
class DataConfig:
    """How a raw source becomes the canonical dataset (see rec/data)."""

    format: str = (
        ""  # movielens-100k | movielens-1m | movielens-latest | amazon | atomic | csv | parquet
    )
    input: str = ""  # raw file or folder; relative paths resolve against REC_DATA_DIR
    dataset_dir: str = ""  # where the canonical dataset is written/read (default: RUN/data)
    min_value: float | None = (
        None  # keep events with value >= this (e.g. rating >= 4); None keeps all
    )
    kcore: int = 0  # iterated k-core on users and items; 0 = off
    dedupe: bool = True  # drop exact duplicate rows
    text_fields: tuple[str, ...] = ("title", "genres", "categories", "brand", "price", "tags")
    max_tags: int = 10
    split: Literal["loo", "temporal"] = "loo"
    temporal_valid_frac: float = 0.1
    temporal_test_frac: float = 0.1
    # column mapping for format = csv | parquet
    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str = "timestamp"
    value_col: str = ""
    event_col: str = ""
    items_path: str = ""
    item_id_col: str = "item_id"
    item_text_cols: tuple[str, ...] = ("title",)


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; written resolved into the run's manifest.json."""

    name: str = "run"
    seed: int = 42
    device: str = "auto"
    # stages `rec run` executes, in this order
    stages: tuple[Literal["prepare", "retrieval", "index", "ranking", "evaluate"], ...] = (
        "prepare",
        "retrieval",
        "index",
        "ranking",
        "evaluate",
    )
    data: DataConfig = field(default_factory=DataConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    ranking: RankingConfig = field(default_factory=RankingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ---------------------------------------------------------------------------------------------
# generic machinery


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against type ``tp``; return it in canonical form (tuples for sequences)."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {_type_name(tp)}")  # pragma: no cover


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a (nested) dict; unknown keys and wrong types raise."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        known = ", ".join(sorted(names))
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} (known: {known})")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a config dataclass (tuples become lists), ready for JSON or TOML."""

    def conv(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    return conv(dataclasses.asdict(cfg))


def config_hash(cfg: Any) -> str:
    """Short sha256 of the canonical JSON of a config."""
    blob = json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value``; the value is read as TOML (``5``, ``true``, ``[1,2]``, ``"x"``)
    and falls back to a bare string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``section.key=value`` applied."""
    out = json.loads(json.dumps(data))
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {text!r}: {part} is not a section")
            node = nxt
        node[path[-1]] = value
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file into a dict, with one-line errors."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror}") from None


def load_config(
    path: str | Path | None = None,
    overrides: typing.Iterable[str] = (),
    base: dict[str, Any] | None = None,
    cls: type[T] = RunConfig,  # type: ignore[assignment]
) -> T:
    """Resolve a config: defaults <- ``base`` dict <- TOML file <- ``--set`` overrides."""
    data: dict[str, Any] = json.loads(json.dumps(base or {}))
    if path is not None:
        data = _merge(data, read_toml(path))
    data = apply_overrides(data, overrides)
    return from_dict(cls, data)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dumps_toml(cfg: Any) -> str:
    """Serialise a config dataclass to TOML (None values are omitted)."""
    lines: list[str] = []

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        raise TypeError(v)

    def emit(d: dict[str, Any], prefix: str) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict) and v is not None}
        tables = {k: v for k, v in d.items() if isinstance(v, dict)}
        if prefix and scalars:
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{k} = {val(v)}")
        if scalars:
            lines.append("")
        for k, v in tables.items():
            emit(v, f"{prefix}.{k}" if prefix else k)

    emit(to_dict(cfg), "")
    return "\n".join(lines)
