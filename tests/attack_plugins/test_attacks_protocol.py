"""A malicious server against secure aggregation: which protocol check stops each attack.

Every attack drives the real client state machines. Each succeeds against a configuration
that lacks the check it targets and fails against the defaults on both graphs, naming the
check that stopped it (``meta["stopped_by"]``).
"""

import warnings
from pathlib import Path

import numpy as np
import pytest
from support import tiny

from attacks.base import ATTACKS, AttackResult, GroundTruth
from attacks.protocol import (
    BothSharesServer,
    FakeDropoutServer,
    RosterIsolationServer,
    SybilServer,
    dropout_lie_plan,
)
from attacks.runner import run_attack
from privfed.engine import run_experiment
from privfed.secagg.config import InsecureThresholdWarning, SecAggConfig
from privfed.secagg.graph import complete_graph

NO_TRUTH = GroundTruth()
GRAPHS = ["complete", "harary"]


def insecure(**kwargs: object) -> SecAggConfig:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureThresholdWarning)
        return SecAggConfig(allow_insecure_threshold=True, **kwargs)  # type: ignore[arg-type]


def play(attack: object, cfg: SecAggConfig, n: int, seed: int = 0) -> AttackResult:
    assert isinstance(
        attack, (FakeDropoutServer, BothSharesServer, SybilServer, RosterIsolationServer)
    )
    return attack.evaluate(attack.play(cfg, n, rng=np.random.default_rng(seed)), NO_TRUTH)


# -- the dropout lie ------------------------------------------------------------------------------


def test_dropout_lie_plan_is_exactly_the_half_threshold_condition_on_the_complete_graph() -> None:
    for n in range(4, 12):
        graph = complete_graph(range(n))
        for t in range(2, n + 1):
            plan = dropout_lie_plan(graph, 0, t)
            covered = sum(len(d) for d in plan.values()) == (n - 1) * t
            assert covered == (2 * t <= n), (n, t)


@pytest.mark.parametrize("n", [4, 6, 9])
def test_fake_dropouts_are_stopped_by_the_two_thirds_threshold(n: int) -> None:
    res = play(FakeDropoutServer(), SecAggConfig(security="semi-honest"), n, seed=n)
    assert res.meta["stopped_by"] == "threshold"
    assert res.metrics["recovered"] == 0.0 and res.metrics["plan_coverage"] < 1.0


def test_the_same_attack_succeeds_when_the_threshold_is_at_most_half() -> None:
    # n = 6, t = 3: unsafe against a server that lies; only the loud flag lets clients accept it
    res = play(FakeDropoutServer(target=2), insecure(security="semi-honest", threshold=3), 6)
    assert res.meta["stopped_by"] == "none"
    assert res.metrics["recovered"] == 1.0  # the isolated input, exactly
    # The consistency check alone stops it, even with that threshold: every client is shown
    # its own survivor set and no set collects enough signatures.
    res = play(FakeDropoutServer(target=2), insecure(threshold=3), 6)
    assert res.meta["stopped_by"] == "consistency-check" and res.metrics["recovered"] == 0.0


@pytest.mark.parametrize("n", [20, 40, 100])
def test_dropout_lie_on_the_sparse_graph(n: int) -> None:
    """Issue 11's probe: Harary degree 4 with a simple-majority threshold (the old default,
    t = 3 of 5) leaks the target under the semi-honest protocol; the consistency check stops
    the same plan, and the two-thirds rule leaves no plan at all."""
    old = dict(graph="harary", degree=4, threshold=3)
    res = play(FakeDropoutServer(target=3), SecAggConfig(security="semi-honest", **old), n)
    assert res.meta["stopped_by"] == "none" and res.metrics["recovered"] == 1.0
    res = play(FakeDropoutServer(target=3), SecAggConfig(**old), n)
    assert res.meta["stopped_by"] == "consistency-check" and res.metrics["recovered"] == 0.0
    two_thirds = SecAggConfig(security="semi-honest", graph="harary", degree=4)
    res = play(FakeDropoutServer(target=3), two_thirds, n)
    assert res.meta["stopped_by"] == "threshold" and res.metrics["recovered"] == 0.0


# -- the other attacks ----------------------------------------------------------------------------


def test_request_for_both_shares_is_refused_by_every_client() -> None:
    attack = BothSharesServer(target=1)
    for cfg in (
        SecAggConfig(security="semi-honest"),
        insecure(security="semi-honest", threshold=3),
    ):
        res = play(attack, cfg, 6)
        # the check: SecAggClient.unmask refuses a request naming a client survivor and dropped
        assert res.meta["stopped_by"] == "client-refuses-both-shares"
        assert res.metrics["refused"] == res.metrics["asked"] == 5.0
        assert res.metrics["shares_obtained"] == 0.0 and res.metrics["recovered"] == 0.0
    # Malicious setting: shares follow from the one signed set; a second set is refused.
    res = play(attack, SecAggConfig(), 6)
    assert res.meta["stopped_by"] == "one-survivor-set-per-session"
    assert res.metrics["mask_key_shares"] == 0.0 and res.metrics["recovered"] == 0.0


@pytest.mark.parametrize("graph", GRAPHS)
def test_sybils_reveal_the_honest_input_only_without_the_pki(graph: str) -> None:
    res = play(SybilServer(), SecAggConfig(graph=graph, security="semi-honest"), 7, seed=1)
    assert res.metrics["recovered"] == 1.0  # a limit of the unauthenticated protocol
    assert "client authentication" in res.notes[0]
    res = play(SybilServer(), SecAggConfig(graph=graph), 7, seed=1)
    assert res.meta["stopped_by"] == "pki" and res.metrics["recovered"] == 0.0


@pytest.mark.parametrize("security", ["semi-honest", "malicious"])
@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("colluders", [0, 1])
def test_roster_isolation(security: str, graph: str, colluders: int) -> None:
    """A roster of one, or of two with a colluding client: it unmasks the target when the
    minimum cohort is disabled, and every client refuses it under the defaults."""
    attack = RosterIsolationServer(colluders=colluders)
    off = insecure(security=security, graph=graph, min_clients=1, min_neighbours=0)
    res = play(attack, off, 6)
    assert res.meta["stopped_by"] == "none" and res.metrics["recovered"] == 1.0
    res = play(attack, SecAggConfig(security=security, graph=graph), 6)
    assert res.meta["stopped_by"] == "min-clients" and res.metrics["recovered"] == 0.0
    assert f"roster of {1 + colluders}" in res.notes[0]


@pytest.mark.parametrize("graph", GRAPHS)
def test_defaults_stop_every_protocol_attack(graph: str) -> None:
    cfg = SecAggConfig(graph=graph)
    assert cfg.security == "malicious"
    stopped = {}
    for attack, n in (
        (FakeDropoutServer(target=3), 30),
        (BothSharesServer(target=1), 8),
        (SybilServer(), 8),
        (RosterIsolationServer(colluders=0), 8),
        (RosterIsolationServer(colluders=1), 8),
    ):
        res = play(attack, cfg, n)
        assert res.metrics["recovered"] == 0.0, attack
        stopped[f"{type(attack).__name__}"] = res.meta["stopped_by"]
    assert stopped == {
        "FakeDropoutServer": "consistency-check",
        "BothSharesServer": "one-survivor-set-per-session",
        "SybilServer": "pki",
        "RosterIsolationServer": "min-clients",
    }


def test_roster_isolation_is_registered() -> None:
    assert "secagg-roster-isolation" in ATTACKS.names()


def test_protocol_attacks_run_against_a_secagg_run_directory(tmp_path: Path) -> None:
    run_experiment(
        tiny(federation={"aggregator": "secagg"}),
        tmp_path / "s",
        progress=False,
        echo=lambda _m: None,
    )
    fake = run_attack("secagg-fake-dropout", tmp_path / "s", seed=0).result
    assert fake.metrics["clients"] == 4.0 and fake.metrics["recovered"] == 0.0
    iso = run_attack("secagg-roster-isolation", tmp_path / "s", seed=0).result
    assert iso.metrics["recovered"] == 0.0 and iso.meta["stopped_by"] == "min-clients"
    run_experiment(
        tiny(federation={"aggregator": "plain"}),
        tmp_path / "p",
        progress=False,
        echo=lambda _m: None,
    )
    from privfed.errors import PrivfedError

    with pytest.raises(PrivfedError, match="aggregator = 'plain'"):
        run_attack("secagg-both-shares", tmp_path / "p", seed=0)
