"""A malicious server against secure aggregation: which protocol check stops each attack."""

from pathlib import Path

import numpy as np
import pytest
from support import tiny

from attacks.base import GroundTruth
from attacks.protocol import BothSharesServer, FakeDropoutServer, SybilServer
from attacks.runner import run_attack
from privfed.engine import run_experiment
from privfed.secagg.config import SecAggConfig, resolve_threshold

NO_TRUTH = GroundTruth()


@pytest.mark.parametrize("n", [4, 6, 9])
def test_fake_dropouts_are_stopped_by_the_two_thirds_threshold(n: int) -> None:
    cfg = SecAggConfig()
    t = resolve_threshold(cfg, num_clients=n, degree=n - 1)
    assert 2 * t > n  # the check: two disjoint sets of t holders cannot exist
    attack = FakeDropoutServer()
    res = attack.evaluate(attack.play(cfg, n, rng=np.random.default_rng(n)), NO_TRUTH)
    assert res.meta["stopped_by"] == "threshold"
    assert res.metrics["recovered"] == 0.0
    assert any("t > n/2" in note for note in res.notes)


def test_the_same_attack_succeeds_when_the_threshold_is_at_most_half() -> None:
    attack = FakeDropoutServer(target=2)
    cfg = SecAggConfig(threshold=3)  # n = 6: t <= n / 2, unsafe against a malicious server
    res = attack.evaluate(attack.play(cfg, 6, rng=np.random.default_rng(0)), NO_TRUTH)
    assert res.meta["stopped_by"] == "none"
    assert res.metrics["recovered"] == 1.0  # the isolated input, exactly


def test_request_for_both_shares_is_refused_by_every_client() -> None:
    attack = BothSharesServer(target=1)
    for cfg in (SecAggConfig(), SecAggConfig(threshold=3)):
        res = attack.evaluate(attack.play(cfg, 6, rng=np.random.default_rng(0)), NO_TRUTH)
        # the check: SecAggClient.unmask refuses a request naming a client survivor and dropped
        assert res.meta["stopped_by"] == "client-refuses-both-shares"
        assert res.metrics["refused"] == res.metrics["asked"] == 5.0
        assert res.metrics["shares_obtained"] == 0.0 and res.metrics["recovered"] == 0.0


def test_sybils_reveal_the_honest_clients_input() -> None:
    attack = SybilServer()
    for graph in ("complete", "harary"):
        cfg = SecAggConfig(graph=graph)
        res = attack.evaluate(attack.play(cfg, 7, rng=np.random.default_rng(1)), NO_TRUTH)
        assert res.metrics["recovered"] == 1.0  # a limit of the unauthenticated protocol
        assert "PKI" in res.notes[0]


def test_protocol_attacks_run_against_a_secagg_run_directory(tmp_path: Path) -> None:
    run_experiment(
        tiny(federation={"aggregator": "secagg"}),
        tmp_path / "s",
        progress=False,
        echo=lambda _m: None,
    )
    fake = run_attack("secagg-fake-dropout", tmp_path / "s", seed=0).result
    assert fake.metrics["clients"] == 4.0 and fake.metrics["recovered"] == 0.0
    run_experiment(
        tiny(federation={"aggregator": "plain"}),
        tmp_path / "p",
        progress=False,
        echo=lambda _m: None,
    )
    from privfed.errors import PrivfedError

    with pytest.raises(PrivfedError, match="aggregator = 'plain'"):
        run_attack("secagg-both-shares", tmp_path / "p", seed=0)
