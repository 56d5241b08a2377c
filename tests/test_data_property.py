"""Property: random malformed CSV input never produces a traceback (DataError or success only)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rec.config import DataConfig
from rec.data.prepare import prepare_dataset
from rec.errors import DataError

HEADERS = [
    "user_id,item_id,timestamp",
    "user_id,item_id,timestamp,value",
    "user_id,item_id",
    "a,b,c",
    "",
]
CELL = st.one_of(
    st.sampled_from(
        ["1", "2", "x", "", "1.5", "-3", "1e3", "nan", '"', '"a,b"', "999999999999999999999", " 7 "]
    ),
    st.text(max_size=5),
)
LINE = st.lists(CELL, min_size=0, max_size=5).map(",".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.sampled_from(HEADERS),
    lines=st.lists(LINE, max_size=8),
    junk=st.binary(max_size=6),
    kcore=st.sampled_from([0, 2]),
    value_col=st.sampled_from(["", "value"]),
)
def test_random_csv_never_crashes(
    header: str, lines: list[str], junk: bytes, kcore: int, value_col: str
) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "in.csv"
        p.write_bytes("\n".join([header, *lines]).encode("utf-8", "surrogatepass") + junk)
        cfg = DataConfig(format="csv", input=str(p), kcore=kcore, value_col=value_col)
        try:
            out = prepare_dataset(cfg, Path(d) / "out")
        except DataError as exc:
            assert "\n" not in str(exc)
            assert not (Path(d) / "out").exists()
        else:
            assert (out / "dataset.json").is_file()
