"""docs/writing-an-algorithm.md run end to end: every snippet, its package installed offline."""

from pathlib import Path

import pytest
from doc_runner import blocks, offline_pip_env, run_page

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "writing-an-algorithm.md"


def test_the_page_has_a_package_a_config_and_commands() -> None:
    kinds = [b.kind for b in blocks(DOC)]
    assert kinds.count("file") >= 4 and "sh" in kinds and "text" in kinds


def test_the_algorithm_partitioner_and_source_page_runs(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="building the page's package offline needs setuptools")
    site, work = tmp_path / "site", tmp_path / "work"
    work.mkdir()
    env = offline_pip_env(site, ROOT)
    run_page(DOC, work, env)
    assert (work / "runs" / "toy" / "manifest.json").is_file()
    assert not (work / "runs" / "bad").exists()  # refused before anything was written
