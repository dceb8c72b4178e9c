"""Reads of files that may be hostile: strict, bounded JSON and TOML with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from privfed.config import MAX_CONFIG_BYTES, load_config
from privfed.errors import ConfigError
from privfed.evaluation.sweep import SweepError, load_sweep
from privfed.io import parse_json, read_json, read_jsonl


def test_parse_json_is_strict_and_never_raises_recursion_error() -> None:
    assert parse_json('{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    for text, why in (
        ('{"a": NaN}', "NaN is not a JSON number"),
        ('{"a": -Infinity}', "-Infinity is not a JSON number"),
        ('{"a": 1, "a": 2}', "the key 'a' appears twice"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"a": ' * 100_000 + "1" + "}" * 100_000, "nested too deeply"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_json(text)


def test_read_json_refuses_oversized_files(tmp_path: Path) -> None:
    f = tmp_path / "m.json"
    f.write_text('{"a": "' + "x" * 200 + '"}')
    assert read_json(f)["a"] == "x" * 200
    with pytest.raises(ValueError, match="larger than 100 bytes"):
        read_json(f, max_bytes=100)


def test_read_jsonl_keeps_complete_object_rows_only(tmp_path: Path) -> None:
    f = tmp_path / "m.jsonl"
    f.write_text('{"round": 1}\n\n{"round": 2}\n[3]\n{"round": 4}\n{"round": 5, "tor')
    assert read_jsonl(f) == [{"round": 1}, {"round": 2}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []
    with pytest.raises(ValueError, match="larger than 10 bytes"):
        read_jsonl(f, max_bytes=10)


def test_config_nesting_bombs_and_huge_files_are_config_errors(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("rounds = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match=r"(?s)c\.toml.*nested too deeply"):
        load_config(f)
    f.write_bytes(b"# " + b"x" * MAX_CONFIG_BYTES + b"\n")
    with pytest.raises(ConfigError, match="larger than"):
        load_config(f)
    f.write_bytes(b"name = '\xff'\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(f)


def test_sweep_nesting_bomb_is_a_sweep_error(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text("[sweep]\nbase = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(SweepError, match="nested too deeply"):
        load_sweep(f)
