"""Run directories and self-describing artifacts: atomic writes, sha256 of parts, manifest.json.

Layout of a run directory::

    RUN/manifest.json      schema_version, versions, resolved config + hash, data fingerprint, parts
    RUN/config.toml        the resolved config, re-usable with --config
    RUN/data/              canonical dataset (unless data.dataset_dir points elsewhere)
    RUN/retrieval/  RUN/index/  RUN/ranking/  RUN/eval/

Every file is written to a temporary name and moved into place with ``os.replace``; a directory
is built next to its final place and swapped in, so a crash never leaves a half-written artifact
where a good one was. The manifest is written last.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rec.errors import ArtifactError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes 0600; give the final file the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    """Atomically write a text file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write JSON (indented, keys in insertion order)."""
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    """Read JSON with a one-line ArtifactError when missing or corrupt."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{p}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{p}: corrupt JSON ({exc})") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces directory ``path`` as a whole.

    The old directory is moved aside first and deleted only after the new one is in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; give the final dir the usual permissions
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}-{time.time_ns()}"
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: str | Path) -> str:
    """Hex sha256 over the relative names and contents of every file under ``path``."""
    root = Path(path)
    h = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for p in files:
        h.update(str(p.relative_to(root) if p != root else p.name).encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Versions of Python and the main libraries, for manifests."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "rec": _version("rec", md)}
    for pkg in (
        "torch",
        "transformers",
        "sentence-transformers",
        "faiss-cpu",
        "faiss-gpu-cu12",
        "polars",
        "numpy",
        "peft",
    ):
        v = _version(pkg, md)
        if v:
            out[pkg] = v
    return out


def _version(pkg: str, md: Any) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return ""


class RunDir:
    """A run directory: paths of its stages and its manifest."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    def stage(self, name: str) -> Path:
        """Folder of a stage (retrieval, index, ranking, eval, data)."""
        return self.path / name

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def require(self) -> RunDir:
        """Raise a clear ArtifactError unless this is a run directory with a manifest."""
        if not self.path.is_dir():
            raise ArtifactError(f"{self.path}: run directory not found")
        if not self.manifest_path.is_file():
            raise ArtifactError(
                f"{self.path}: not a run directory (no {MANIFEST}); "
                "create one with `rec run` or `rec data prepare --run-dir`"
            )
        return self

    def require_stage(self, name: str, marker: str) -> Path:
        """Path of a stage folder; raise unless ``marker`` (a file inside it) exists."""
        self.require()
        folder = self.stage(name)
        if not (folder / marker).exists():
            raise ArtifactError(
                f"{folder}: stage {name!r} missing or incomplete (no {marker}); run the stage first"
            )
        return folder

    def manifest(self) -> dict[str, Any]:
        """The manifest, or an empty skeleton when none exists yet."""
        if not self.manifest_path.exists():
            return {"schema_version": SCHEMA_VERSION, "parts": {}, "metrics": {}}
        m = read_json(self.manifest_path)
        if m.get("schema_version") != SCHEMA_VERSION:
            raise ArtifactError(
                f"{self.manifest_path}: schema_version {m.get('schema_version')} "
                f"is not {SCHEMA_VERSION}"
            )
        return m

    def update_manifest(
        self,
        *,
        config: Any | None = None,
        part: str | None = None,
        info: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Merge into the manifest and rewrite it atomically.

        ``part`` names a stage folder (or file) under the run; its sha256 and ``info`` are recorded.
        """
        from rec.config import config_hash, dumps_toml, to_dict

        m = self.manifest()
        m["schema_version"] = SCHEMA_VERSION
        m["versions"] = versions()
        m["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if config is not None:
            m["config"] = to_dict(config)
            m["config_hash"] = config_hash(config)
            write_text(self.config_path, dumps_toml(config))
        if part is not None:
            target = self.path / part
            entry = {"path": part, "sha256": sha256_tree(target) if target.exists() else None}
            entry.update(info or {})
            m.setdefault("parts", {})[part] = entry
        if metrics:
            m.setdefault("metrics", {}).update(metrics)
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.manifest_path, m)
        return m

    def dataset_dir(self) -> Path:
        """The canonical dataset this run uses: ``data.dataset_dir`` of its config, else RUN/data."""
        cfg = self.config()
        d = Path(cfg.data.dataset_dir) if cfg.data.dataset_dir else self.stage("data")
        if not (d / "dataset.json").is_file():
            raise ArtifactError(f"{d}: the run's dataset is missing (no dataset.json)")
        return d

    def config(self) -> Any:
        """The RunConfig stored in this run's manifest."""
        from rec.config import RunConfig, from_dict

        m = self.require().manifest()
        if "config" not in m:
            raise ArtifactError(f"{self.manifest_path}: no config recorded")
        return from_dict(RunConfig, m["config"])
