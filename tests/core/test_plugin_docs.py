"""docs/writing-an-algorithm.md run end to end: every snippet, its package installed offline."""

import os
from pathlib import Path

import pytest
from doc_runner import blocks, run_page

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "writing-an-algorithm.md"


def test_the_page_has_a_package_a_config_and_commands() -> None:
    kinds = [b.kind for b in blocks(DOC)]
    assert kinds.count("file") >= 4 and "sh" in kinds and "text" in kinds


def test_the_algorithm_partitioner_and_source_page_runs(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="building the page's package offline needs setuptools")
    site, work = tmp_path / "site", tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "PIP_TARGET": str(site),
        "PIP_NO_INDEX": "1",
        "PIP_NO_DEPS": "1",
        "PIP_NO_BUILD_ISOLATION": "0",  # pip's spelling of --no-build-isolation
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(site), str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    run_page(DOC, work, env)
    assert (work / "runs" / "toy" / "manifest.json").is_file()
    assert not (work / "runs" / "bad").exists()  # refused before anything was written
