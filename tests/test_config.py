"""Config machinery: TOML + --set, strict keys and types, hashing, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from rec.config import (
    RunConfig,
    config_hash,
    dumps_toml,
    load_config,
    parse_override,
    read_toml,
)
from rec.errors import ConfigError


def test_defaults_are_frozen() -> None:
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    with pytest.raises(AttributeError):
        cfg.seed = 1  # type: ignore[misc]


def test_toml_then_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('seed = 7\n[data]\nkcore = 5\ntext_fields = ["title"]\n')
    cfg = load_config(p, ["data.kcore=10", "eval.filter_seen=false", "data.min_value=4"])
    assert cfg.seed == 7
    assert cfg.data.kcore == 10
    assert cfg.data.text_fields == ("title",)
    assert cfg.data.min_value == 4.0
    assert cfg.eval.filter_seen is False


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config key data\.kcroe"):
        load_config(overrides=["data.kcroe=5"])
    p = tmp_path / "c.toml"
    p.write_text("[nope]\nx = 1\n")
    with pytest.raises(ConfigError, match="unknown config key nope"):
        load_config(p)


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.kcore=five", "expected an integer"),
        ("data.kcore=1.5", "expected an integer"),
        ("eval.filter_seen=1", "expected true/false"),
        ("data.split=random", "is not one of"),
        ("data.text_fields=3", "expected a list"),
        ("seed", "expected section.key=value"),
    ],
)
def test_wrong_types_are_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_override_values_parse_as_toml() -> None:
    assert parse_override("a.b=5") == (["a", "b"], 5)
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a=hello world") == (["a"], "hello world")
    assert parse_override('a="x=y"') == (["a"], "x=y")


def test_hash_changes_with_config_and_round_trips(tmp_path: Path) -> None:
    a = load_config()
    b = load_config(overrides=["seed=1"])
    assert config_hash(a) != config_hash(b)
    assert config_hash(a) == config_hash(load_config())
    p = tmp_path / "resolved.toml"
    p.write_text(dumps_toml(b))
    assert load_config(p) == b


def test_missing_and_invalid_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        read_toml(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = = 3\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        read_toml(bad)


def test_shipped_configs_load() -> None:
    for p in sorted((Path(__file__).parents[1] / "configs").glob("*.toml")):
        load_config(p)
