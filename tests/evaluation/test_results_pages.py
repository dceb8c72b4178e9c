"""Every results page's recorded commands exist and parse; the regeneration driver covers them.

A page in docs/results names the command that made it and the files it read. These tests check,
without running anything long, that the scripts and configs a page (or the driver
``experiments/regenerate_all.sh``) names are in the repository and that each recorded
``python experiments/...`` command parses with that script's own argument parser.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from privfed.evaluation.sweep import load_sweep

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs" / "results").glob("*.md"))
DRIVER = ROOT / "experiments" / "regenerate_all.sh"
SHELL = sorted((ROOT / "experiments").glob("**/*.sh"))
PATH = re.compile(r"experiments/[\w./-]+\.(?:toml|sh|py)")


def _script(path: Path) -> ModuleType:
    name = f"_page_script_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def check_command(command: str, *, where: str) -> None:
    """The script exists, every repository path it names exists, its arguments parse."""
    argv = shlex.split(command)
    if argv[:1] == ["privfed"]:
        if len(argv) > 2 and argv[1] == "sweep":
            load_sweep(ROOT / argv[2])  # the sweep file exists and is valid
        return
    assert argv[0] in ("python", "python3"), f"{where}: unexpected command {command!r}"
    script = ROOT / argv[1]
    assert script.is_file(), f"{where}: {argv[1]} does not exist"
    for arg in argv[2:]:
        if PATH.fullmatch(arg):
            assert (ROOT / arg).is_file(), f"{where}: {arg} (an argument) does not exist"
    module = _script(script)
    try:
        module.parse_args(argv[2:])
    except SystemExit as exc:  # argparse rejected the arguments
        raise AssertionError(f"{where}: {command!r} does not parse ({exc})") from None


def shell_commands(path: Path) -> list[str]:
    """The ``python ...`` and ``privfed sweep ...`` commands a shell file runs."""
    text = re.sub(r"\\\n\s*", " ", path.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"(?:run\s+\S+\s+)?((?:python|privfed sweep)\s.*)$", line)
        if m and "experiments/" in m.group(1):
            out.append(m.group(1).split(" || ")[0].strip())
    return out


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_commands_and_files_exist(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    commands = re.findall(r"- command: `([^`]+)`", text)
    assert commands, f"{page.name} records no command (a '- command: `...`' line)"
    for c in commands:
        check_command(c, where=page.name)
    for path in set(PATH.findall(text)):
        if "(generated)" in text.split(path, 1)[1][:20]:
            continue  # a sweep file the script wrote next to its outputs
        if path.startswith(("experiments/", "experiments\\")) and "sweeps/" not in path:
            assert (ROOT / path).exists(), f"{page.name} names {path}, which does not exist"


@pytest.mark.parametrize("path", SHELL, ids=[p.name for p in SHELL])
def test_shell_commands_parse(path: Path) -> None:
    for c in shell_commands(path):
        check_command(c, where=str(path.relative_to(ROOT)))


def test_driver_regenerates_every_page_in_order() -> None:
    commands = shell_commands(DRIVER)
    scripts = [shlex.split(c)[1] for c in commands if c.startswith("python")]
    assert scripts == [
        "experiments/privacy_utility.py",
        "experiments/algorithms.py",
        "experiments/attacks_vs_privacy.py",
        "experiments/benchmarks/shakespeare.py",
    ]
    text = DRIVER.read_text(encoding="utf-8")
    assert "EXPECTED_" not in text, "the driver quotes an expected duration for every page"
    assert len(re.findall(r"Expected: ~?[\d.]+ (?:h|min)", text)) >= 3
    for page in ("privacy-utility", "algorithms", "attacks"):
        wrapper = ROOT / "experiments" / "benchmarks" / f"{page.replace('-', '_')}.sh"
        if page == "attacks":
            wrapper = ROOT / "experiments" / "benchmarks" / "attacks_vs_privacy.sh"
        assert f'regenerate_all.sh" {page}' in wrapper.read_text(encoding="utf-8")


def test_a_page_refuses_a_dirty_checkout_and_allow_dirty_stays_out_of_docs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from privfed.evaluation import provenance

    monkeypatch.chdir(ROOT)
    dirty = provenance.Checkout("abc", (" M privfed/engine.py",))
    monkeypatch.setattr(provenance, "checkout", lambda repo: dirty)
    for name in ("privacy_utility", "algorithms", "attacks_vs_privacy"):
        module = _script(ROOT / "experiments" / f"{name}.py")
        assert module.main(["--out", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert "refusing to write docs/results" in err and "uncommitted changes" in err
        assert module.main(["--out", str(tmp_path / name), "--allow-dirty"]) == 2
        assert "--allow-dirty writes only outside" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before running anything


def test_points_from_another_commit_are_refused(tmp_path: Path) -> None:
    from privfed.evaluation.provenance import Checkout, check_points

    rows = [
        {"point_id": "a", "commit": "c1"},
        {"point_id": "b", "commit": "c2"},
        {"point_id": "b", "commit": "c2"},
    ]
    problems = check_points(rows, commit="c1")
    assert len(problems) == 1 and "1 point(s) were computed at commit c2" in problems[0]
    assert check_points(rows[:1], commit="c1") == []
    assert Checkout("c1", ()).clean and not Checkout("c1", ("?? x",)).clean


def test_written_pages_do_not_make_the_checkout_dirty(tmp_path: Path) -> None:
    # regenerate_all.sh writes one page after another from one commit: the second page must not
    # refuse because the first one wrote docs/results/; any other change still counts
    from privfed.repro import git_state

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "page.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("commit", "-qm", "c")
    sub = tmp_path / "docs"
    (tmp_path / "docs" / "results" / "page.md").write_text("new\n")
    (tmp_path / "docs" / "results" / "fig.png").write_bytes(b"png")
    for where in (tmp_path, sub):
        state = git_state(where, untracked=True)
        assert state is not None and state[1] == ()
    (tmp_path / "code.py").write_text("x = 2\n")
    (tmp_path / "new.py").write_text("")
    state = git_state(sub, untracked=True)
    assert state is not None and sorted(state[1]) == [" M code.py", "?? new.py"]
    state = git_state(tmp_path, untracked=False)
    assert state is not None and state[1] == (" M code.py",)
