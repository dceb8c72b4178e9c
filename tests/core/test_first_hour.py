"""What a newcomer meets first: a fast command line, plug-in listings, clear small messages."""

import io
import json
import subprocess
import sys
import textwrap
from contextlib import redirect_stderr, redirect_stdout
from importlib import metadata
from pathlib import Path

import pytest
import tomli_w
from support import tiny_dict

from privfed.attack_api import ATTACKS, Adversary, ThreatModel, View
from privfed.errors import RegistryError
from privfed.registry import Registry, callable_check

ROOT = Path(__file__).resolve().parents[2]

_PROBE = textwrap.dedent(
    """
    import contextlib, io, json, sys

    HEAVY = ("torch", "opacus", "sklearn", "scipy")
    def heavy():
        return sorted(m for m in HEAVY if m in sys.modules)

    seen = {}
    import privfed.config
    seen["import privfed.config"] = heavy() + (["numpy"] if "numpy" in sys.modules else [])
    import privfed.cli
    seen["import privfed.cli"] = heavy()
    privfed.cli.build_parser()
    seen["build_parser()"] = heavy()
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            privfed.cli.main(["--help"])
        except SystemExit:
            pass
    seen["privfed --help"] = heavy()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = privfed.cli.main(["list"])
    seen["privfed list"] = heavy()
    print(json.dumps({"seen": seen, "code": code, "listing": out.getvalue()}))
    """
)


def test_help_and_list_import_neither_torch_nor_opacus() -> None:
    # A fresh interpreter: what the command line imports before any real work.
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    for step, heavy in report["seen"].items():
        assert heavy == [], f"{step} imported {heavy}"
    assert report["code"] == 0
    listing = report["listing"]
    # every attack is listed by its threat model, built-ins included
    for name in ATTACKS.names():
        line = next(x for x in listing.splitlines() if x.strip().startswith(f"{name} "))
        assert ATTACKS.entry(name).description in line
    assert "mia-loss" in listing and "outsider [released-models]" in listing
    for name in ("digits", "markov", "mlp", "cnn", "lstm", "dirichlet", "natural", "fedavg"):
        assert f"  {name} " in listing


def _entry_points(monkeypatch: pytest.MonkeyPatch, group: str, eps: list[metadata.EntryPoint]):
    real = metadata.entry_points

    def fake(**kwargs: str):
        if kwargs.get("group") == group:
            return metadata.EntryPoints(eps)
        return real(**kwargs)

    monkeypatch.setattr(metadata, "entry_points", fake)


def test_a_broken_entry_point_is_named_and_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    group = "privfed.test-plugins"
    _entry_points(
        monkeypatch,
        group,
        [
            metadata.EntryPoint("good", "privfed.registry:callable_check", group),
            metadata.EntryPoint("missing", "privfed.no_such_module:thing", group),
            metadata.EntryPoint("not-callable", "privfed.registry:__doc__", group),
        ],
    )
    reg: Registry[object] = Registry("widget", entry_point_group=group, check=callable_check("w"))
    reg.register_lazy("lazy", "privfed.rng:numpy_rng", description="a lazily imported one")
    assert reg.get("good") is callable_check  # one lookup loads one entry point
    assert reg.problems() == {}
    with pytest.raises(RegistryError, match=r"'missing'.*No module named 'privfed.no_such_module'"):
        reg.get("missing")
    assert [entry.name for entry in reg.listing()] == ["good", "lazy"]
    assert set(reg.problems()) == {"missing", "not-callable"}
    assert "w must be callable, got a str" in reg.problems()["not-callable"]
    assert "uninstall" in reg.problems()["not-callable"]
    with pytest.raises(RegistryError, match="unknown widget 'goo'; did you mean 'good'"):
        reg.get("goo")
    assert "good" in reg and "missing" not in reg
    assert reg.get("lazy").__name__ == "numpy_rng"


def test_threat_model_errors_read_well() -> None:
    with pytest.raises(ValueError, match="the adversary outsider cannot observe aggregate"):
        ThreatModel(adversary=Adversary.OUTSIDER, observes=frozenset({View.AGGREGATE}))


def test_run_resolves_bundled_config_names_and_interrupts_name_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import privfed.engine
    from privfed.cli import main
    from privfed.config import bundled_configs, resolve_config

    assert resolve_config("quickstart") == bundled_configs()["quickstart"]
    assert resolve_config("quickstart.toml") == Path("quickstart.toml")  # a path, not a name
    seen = []

    def interrupted(cfg, out, **kwargs):  # a Ctrl-C during the run
        seen.append((cfg.name, out))
        raise KeyboardInterrupt

    monkeypatch.setattr(privfed.engine, "run_experiment", interrupted)
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        code = main(["run", "quickstart", "--out", str(tmp_path / "q"), "--quiet"])
    assert code == 130 and seen == [("quickstart", tmp_path / "q")]
    assert f"privfed run --resume --out {tmp_path / 'q'}" in err.getvalue()


def test_run_help_explains_the_progress_bar() -> None:
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        from privfed.cli import main

        main(["run", "--help"])
    for word in ("clients", "trainings", "acc", "eps"):
        assert f"\n  {word} " in out.getvalue()


def test_sweep_names_every_bad_axis_at_once(tmp_path: Path) -> None:
    from privfed.evaluation.sweep import SweepError, load_sweep

    (tmp_path / "base.toml").write_text(tomli_w.dumps(tiny_dict()))
    (tmp_path / "bad.toml").write_text(
        textwrap.dedent(
            """
            [sweep]
            base = "base.toml"
            [sweep.grid]
            "dp.target_epsilon" = [-1.0, 4.0]
            "federation.algorithm" = ["fedavg", "nope"]
            "train.lr" = []
            [sweep.algorithm_params.ditto]
            mu = 1.0
            """
        )
    )
    with pytest.raises(SweepError) as info:
        load_sweep(tmp_path / "bad.toml")
    text = str(info.value)
    assert "4 problem(s)" in text
    assert "axis 'dp.target_epsilon' value -1" in text
    assert "axis 'federation.algorithm' value nope" in text
    assert "axis 'train.lr' must be a non-empty array" in text
    assert "algorithm_params.ditto: mu is not a parameter" in text


def test_no_document_installs_privfed_from_an_index() -> None:
    # privfed is installed from its checkout (pip install -e .), never by name from an index
    for path in [*ROOT.glob("*.md"), *ROOT.glob("docs/**/*.md"), *ROOT.glob("privfed/**/*.py")]:
        text = path.read_text(encoding="utf-8")
        assert "privfed[" not in text, f"{path}: `pip install 'privfed[...]'` resolves nothing"


def test_a_nan_metric_always_comes_with_its_reason() -> None:
    import numpy as np

    from attacks.inversion import AnalyticInversion
    from privfed.attack_api import AttackResult, GroundTruth, Records
    from privfed.attack_runner import explain_nans

    # inversion-inbox recovered nothing (a zero update for the unit): the note says why
    empty = AttackResult(
        attack="inversion-inbox",
        outputs={"candidates": np.zeros((0, 4))},
        meta={"unit": "image", "group": "image", "targets": "0"},
    )
    truth = GroundTruth(
        train={0: {"image": Records(np.ones((3, 4), np.float32), {"t": np.zeros(3, np.int64)})}},
        mean_image={"image": np.full(4, 0.5)},
    )
    res = AnalyticInversion().evaluate(empty, truth)
    assert np.isnan(res.metrics["psnr_top_db"]) and np.isfinite(res.metrics["psnr_prior_db"])
    assert explain_nans(res) == res  # every nan is named in a note already
    assert "no candidate record was recovered" in res.notes[0]
    # a target without records of the group: nan with its reason, not a crash
    other = AnalyticInversion().evaluate(empty, GroundTruth(train={0: {}}, mean_image={}))
    assert "hold no training record of group 'image'" in other.notes[0]
    # an attack that says nothing gets a note from the framework
    silent = explain_nans(AttackResult(attack="x", metrics={"a": float("nan"), "b": 1.0}))
    assert silent.notes and silent.notes[0].startswith("a: nan, and the attack 'x' gave no reason")


def test_python_dash_m_privfed_is_the_command_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "privfed", "list"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "fedavg" in proc.stdout and "mia-loss" in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "privfed", "run", "no-such-config"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert bad.returncode != 0 and "no-such-config" in bad.stderr
