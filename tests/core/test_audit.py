"""The canary audit inside a federated run (Steinke et al. 2023 one-run method)."""

import json
import math
from pathlib import Path

import pytest
from support import tiny_dict

from privfed.config import from_dict
from privfed.engine import Engine, run_experiment
from privfed.errors import ConfigError


def _cfg(eps: float, algorithm: str = "local"):
    data = tiny_dict(rounds=10)
    data["groups"] = {"image": {**data["groups"]["image"], "hidden": [64]}}
    data["federation"].update({"num_clients": 3, "algorithm": algorithm})
    data["train"] = {"local_steps": 100, "batch_size": 8, "lr": 0.5}
    data["dp"] = {"target_epsilon": eps, "delta": 1e-3}
    data["eval"] = {"every": 10}
    data["audit"] = {"canaries": 100, "guesses": 20, "client": 1}
    return from_dict(data)


def test_canaries_go_only_into_the_audited_clients_training_data(tmp_path: Path):
    eng = Engine(_cfg(math.inf), tmp_path / "r", progress=False, echo=lambda m: None)
    plan = eng.fed.audit
    assert plan is not None and len(plan.canaries) == 100
    gs = eng.fed.groups["image"]
    inc = set(plan.canaries[plan.included].tolist())
    assert 0 < len(inc) < 100
    assert inc <= set(gs.clients[1].train.tolist())
    for c, cg in gs.clients.items():
        others = set(cg.val.tolist()) | set(cg.test.tolist())
        if c != 1:
            others |= set(cg.train.tolist())
        assert not others & set(plan.canaries.tolist())
    # each canary is a copy of an unused record carrying a wrong label in every column
    src = gs.source
    assert len(src) == 1797 + 100
    import numpy as np

    for c in plan.canaries[:20]:
        same = np.flatnonzero((src.x[:1797] == src.x[c]).reshape(1797, -1).all(axis=1))
        assert len(same) >= 1
        for col in src.labels:
            assert src.labels[col][c] not in set(src.labels[col][same].tolist())


def test_audit_finds_leakage_without_dp_and_stays_below_the_accountant_with_dp(tmp_path: Path):
    open_run = run_experiment(_cfg(math.inf), tmp_path / "a", progress=False, echo=lambda m: None)
    # the client's own model memorizes its mislabeled canaries: the audit sees it
    assert open_run.audit["epsilon_lower_bound"] > 0.5
    assert not open_run.audit["flagged"]  # the accountant says inf
    private = run_experiment(_cfg(1.0), tmp_path / "b", progress=False, echo=lambda m: None)
    a = private.audit
    assert a["epsilon_accountant"] <= 1.0 + 1e-9
    assert a["epsilon_lower_bound"] <= a["epsilon_accountant"]
    assert not a["flagged"]
    assert json.loads((tmp_path / "b" / "audit.json").read_text()) == a


def test_audit_config_errors():
    data = tiny_dict()
    data["audit"] = {"canaries": 10, "guesses": 8}
    with pytest.raises(ConfigError, match="guesses must be at most canaries / 2"):
        from_dict(data)
    data["audit"] = {"canaries": 8, "group": "nope"}
    with pytest.raises(ConfigError, match="audit.group must be one of image, text"):
        from_dict(data)
