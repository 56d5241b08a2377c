"""`rec data prepare|stats|download` through click's CliRunner: output, errors, exit codes."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import rec.cli.data  # noqa: F401  (attaches the `data` group)
import rec.data.download as dl
from rec.cli import cli


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _assert_error(res: Result, *fragments: str, code: int = 1) -> None:
    assert res.exit_code == code, res.output
    assert isinstance(res.exception, SystemExit)
    assert "Traceback" not in res.stderr and "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rec: error: "), res.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    assert res.stdout == ""


def test_prepare_and_stats(ml100k_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    res = _run(
        "data",
        "prepare",
        "--format",
        "movielens-100k",
        "--input",
        str(ml100k_dir),
        "--out",
        str(out),
    )
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)
    assert row["events"] == 6 and row["users"] == 3 and row["splits"] == ["loo", "temporal"]
    res = _run("data", "stats", str(out))
    assert res.exit_code == 0
    s = json.loads(res.stdout)
    assert s["users"] == 3 and s["items_catalogue"] == 3 and s["events"] == 6
    assert s["history_max"] == 3 and s["text_coverage_catalogue"] == 1.0
    assert s["timestamp_min"] == 50 and s["density"] == pytest.approx(6 / 9)
    res = _run("data", "stats", str(out), "--format", "table")
    assert res.exit_code == 0 and "history_p50" in res.stdout


def test_prepare_config_and_set(ml100k_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\nformat = "csv"\ninput = "{ml100k_dir}"\nkcore = 0\n')
    res = _run(
        "data",
        "prepare",
        "--config",
        str(cfg),
        "--format",
        "movielens-100k",
        "--set",
        "data.min_value=4",
        "--out",
        str(tmp_path / "ds"),
    )
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["config"]["min_value"] == 4.0 and meta["cleaning"]["below_min_value"] == 3


def test_prepare_into_run_dir(ml100k_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = _run(
        "data",
        "prepare",
        "--format",
        "movielens-100k",
        "--input",
        str(ml100k_dir),
        "--run-dir",
        str(run),
    )
    assert res.exit_code == 0, res.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["parts"]["data"]["counts"]["events"] == 6
    assert (run / "data" / "dataset.json").is_file()


@pytest.mark.parametrize(
    "content, fragments",
    [
        (None, ["nope.csv: input not found"]),
        (b"user,item_id,timestamp\na,b,1\n", ["bad.csv", "missing column 'user_id'"]),
        (
            b"user_id,item_id,timestamp\na,b,1\na,b,x1\n",
            ["bad.csv:3 (column 'timestamp')", "non-numeric timestamp 'x1'"],
        ),
        (b"user_id,item_id,timestamp\na,\xff\xfe,1\n", ["bad.csv:2", "not valid UTF-8"]),
        (b"user_id,item_id,timestamp\n", ["bad.csv", "no events left"]),
    ],
)
def test_prepare_bad_csv(tmp_path: Path, content: bytes | None, fragments: list[str]) -> None:
    p = tmp_path / ("nope.csv" if content is None else "bad.csv")
    if content is not None:
        p.write_bytes(content)
    res = _run(
        "data", "prepare", "--format", "csv", "--input", str(p), "--out", str(tmp_path / "ds")
    )
    _assert_error(res, *fragments)
    assert not (tmp_path / "ds").exists()


def test_prepare_unknown_format_and_kcore_empty(ml100k_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    _assert_error(
        _run("data", "prepare", "--format", "xml", "--input", str(ml100k_dir), "--out", str(out)),
        "unknown format 'xml'",
    )
    assert (
        _run(
            "data",
            "prepare",
            "--format",
            "movielens-100k",
            "--input",
            str(ml100k_dir),
            "--out",
            str(out),
        ).exit_code
        == 0
    )
    stamp = (out / "dataset.json").read_bytes()
    res = _run(
        "data",
        "prepare",
        "--format",
        "movielens-100k",
        "--input",
        str(ml100k_dir),
        "--out",
        str(out),
        "--set",
        "data.kcore=10",
    )
    _assert_error(res, "ml-100k", "no events left after the 10-core filter")
    assert (out / "dataset.json").read_bytes() == stamp  # previous dataset intact


def test_prepare_bad_set_key(tmp_path: Path) -> None:
    res = _run(
        "data",
        "prepare",
        "--format",
        "csv",
        "--input",
        "x",
        "--out",
        str(tmp_path),
        "--set",
        "data.colour=red",
    )
    _assert_error(res, "unknown config key data.colour", code=2)


def test_stats_not_a_dataset(tmp_path: Path) -> None:
    _assert_error(_run("data", "stats", str(tmp_path)), "not a prepared dataset")


def test_download_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*a: object, **k: object) -> None:
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    monkeypatch.setenv("REC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(dl.urllib.request, "urlopen", offline)
    res = _run("data", "download", "ml-100k")
    _assert_error(res, "cannot download ml-100k", "Network is unreachable", "offline")
    assert list((tmp_path / "cache").iterdir()) == []
    _assert_error(_run("data", "download", "ml-20m"), "unknown dataset 'ml-20m'")


def _zip(tmp_path: Path, files: dict[str, bytes]) -> Path:
    z = tmp_path / "srv" / "ml-100k.zip"
    z.parent.mkdir()
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ml-100k/", "")
        for name, data in files.items():
            zf.writestr(f"ml-100k/{name}", data)
    return z


def test_download_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"u.data": b"1\t1\t5\t100\n", "README": b"hello\n"}
    z = _zip(tmp_path, files)
    monkeypatch.setenv("REC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(dl, "BASE_URL", z.parent.as_uri())
    spec = {
        "format": "movielens-100k",
        "lines": {},
        "sha256": {k: hashlib.sha256(v).hexdigest() for k, v in files.items()},
    }
    monkeypatch.setitem(dl.DATASETS, "ml-100k", spec)
    res = _run("data", "download", "ml-100k")
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)
    assert Path(row["path"]) == tmp_path / "cache" / "ml-100k"
    assert (tmp_path / "cache" / "ml-100k" / "u.data").read_bytes() == files["u.data"]

    bad = {**spec, "sha256": {**spec["sha256"], "README": "0" * 64}}
    monkeypatch.setitem(dl.DATASETS, "ml-100k", bad)
    res = _run("data", "download", "ml-100k", "--force")
    _assert_error(res, "sha256 mismatch for README")
    # the verified copy from before is still there
    assert (tmp_path / "cache" / "ml-100k" / "u.data").is_file()
