"""Fetch the official GroupLens archives into a local cache, verified by sha256.

``download_dataset(name)`` downloads ``files.grouplens.org/datasets/movielens/<name>.zip`` into
``$REC_CACHE_DIR`` (default ``~/.cache/rec/data``), extracts its files into ``<cache>/<name>/``
and checks every member whose sha256 is known (constants below, from the byte-verified copies
described in ../shared/data/*/PROVENANCE.md). ml-1m's ``ratings.dat`` has no known-good hash
here; it is checked by its line count (1,000,209 ratings). Any failure is a DataError (one line)
and leaves no partial folder behind.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from rec.artifacts import atomic_dir, read_json, sha256_file, write_json
from rec.errors import ArtifactError, DataError

BASE_URL = "https://files.grouplens.org/datasets/movielens"
TIMEOUT_S = 30
MARKER = ".rec-download.json"

DATASETS: dict[str, dict[str, Any]] = {
    "ml-100k": {
        "format": "movielens-100k",
        "sha256": {
            "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
            "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
            "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
            "u.genre": "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb",
            "u.occupation": "cd5fbec9afe345d993a62fc7817df1a4a9079c4feb267b3118763b8fd942137d",
            "u.info": "5b0a40b2e47a729ee6203063f6dcf8790c2e63f5a18663e6ee318a72c5f3c27b",
            "README": "4883b8cf340ed0059971b33f56ad3adc88a40792108ebca3d24aafc4c82e8b52",
        },
        "lines": {},
    },
    "ml-1m": {
        "format": "movielens-1m",
        "sha256": {
            "movies.dat": "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9",
            "users.dat": "1dc3a95300cb19f7c10e027daf29b8cdf1d908dab65b5edfb45950aa389a10a3",
        },
        "lines": {"ratings.dat": 1_000_209},
    },
    "ml-latest-small": {
        "format": "movielens-latest",
        "sha256": {
            "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
            "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
            "tags.csv": "92a9f8bb7916dceef6151209845788c3643f794dfa79d1feaec7121b5960399d",
            "links.csv": "97ad18e4e56a09363c65676b6cb3482ce3e2cea2372a24620c1599c843325f31",
            "README.txt": "63d22ac138e80fae37021797ed8e1b9424b5239dc576a137422adf783ae3f404",
        },
        "lines": {},
    },
}


def cache_dir() -> Path:
    """``$REC_CACHE_DIR`` or ``~/.cache/rec/data``."""
    env = os.environ.get("REC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rec" / "data"


def dataset_url(name: str) -> str:
    return f"{BASE_URL}/{name}.zip"


def download_dataset(name: str, dest: str | Path | None = None, force: bool = False) -> Path:
    """Download, verify and extract dataset ``name``; return its folder (cached unless ``force``)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    spec = DATASETS[name]
    target = Path(dest) if dest is not None else cache_dir() / name
    if not force and (target / MARKER).is_file():
        try:
            if read_json(target / MARKER).get("name") == name:
                return target
        except ArtifactError:  # unreadable marker: download again
            pass
    url = dataset_url(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".zip", dir=target.parent)
    os.close(fd)
    tmp_zip = Path(tmp_name)
    try:
        _fetch(url, tmp_zip, name)
        zip_sha = sha256_file(tmp_zip)
        with atomic_dir(target) as tmp:
            members = _extract(tmp_zip, tmp, url)
            _verify(tmp, spec, url)
            write_json(
                tmp / MARKER,
                {
                    "name": name,
                    "url": url,
                    "zip_sha256": zip_sha,
                    "format": spec["format"],
                    "files": members,
                },
            )
    finally:
        tmp_zip.unlink(missing_ok=True)
    return target


def _fetch(url: str, out: Path, name: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp, out.open("wb") as fh:
            while block := resp.read(1 << 20):
                fh.write(block)
    except urllib.error.HTTPError as exc:
        raise DataError(
            f"cannot download {name} from {url}: HTTP {exc.code} {exc.reason}"
        ) from None
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or str(exc.reason)
        raise DataError(
            f"cannot download {name} from {url}: {reason} (offline? no network access)"
        ) from None
    except TimeoutError:
        raise DataError(
            f"cannot download {name} from {url}: timed out after {TIMEOUT_S}s "
            "(offline? no network access)"
        ) from None
    except OSError as exc:
        raise DataError(
            f"cannot download {name} from {url}: {exc.strerror or exc} (offline? no network access)"
        ) from None


def _extract(zip_path: Path, out: Path, url: str) -> list[str]:
    """Extract the files of the archive into ``out`` (flat: the top folder is dropped)."""
    names = []
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                base = Path(info.filename).name
                if not base or base.startswith("."):
                    continue
                with zf.open(info) as src, (out / base).open("wb") as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
                names.append(base)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise DataError(f"downloaded file is not a valid zip archive ({exc})", url) from None
    return names


def _verify(folder: Path, spec: dict[str, Any], url: str) -> None:
    for member, expected in spec["sha256"].items():
        p = folder / member
        if not p.is_file():
            raise DataError(f"archive lacks {member}", url)
        got = sha256_file(p)
        if got != expected:
            raise DataError(
                f"sha256 mismatch for {member}: expected {expected[:16]}..., got {got[:16]}...", url
            )
    for member, expected_lines in spec["lines"].items():
        p = folder / member
        if not p.is_file():
            raise DataError(f"archive lacks {member}", url)
        with p.open("rb") as fh:
            n = sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
        if n != expected_lines:
            raise DataError(f"{member} has {n} lines, expected {expected_lines}", url)
