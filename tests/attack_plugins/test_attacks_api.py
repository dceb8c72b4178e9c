"""The plug-in API: threat models, what each adversary is handed, the registry."""

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from probe_attacks import OutsiderProbe, ServerProbe, Spy, array_digest, survey
from support import tiny

from attacks.base import (
    ATTACKS,
    Adversary,
    Attack,
    GroundTruth,
    ThreatModel,
    View,
    register_attack,
)
from attacks.membership import LiRAOffline
from attacks.observe import AttackSetupError, observe_run
from attacks.runner import AttackParameterError, make_attack, run_attack
from privfed.engine import run_experiment
from privfed.errors import RegistryError
from privfed.rng import numpy_rng

SERVER = ThreatModel(
    adversary=Adversary.HONEST_BUT_CURIOUS_SERVER,
    observes=frozenset({View.SERVER_INBOX, View.AGGREGATE, View.RELEASED_MODELS}),
)
OUTSIDER = ThreatModel(adversary=Adversary.OUTSIDER, observes=frozenset({View.RELEASED_MODELS}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for agg in ("plain", "secagg"):
        d = tmp_path_factory.mktemp(agg) / "run"
        cfg = tiny(federation={"num_clients": 4, "aggregator": agg}, dp={"target_epsilon": 8.0})
        run_experiment(cfg, d, progress=False, echo=lambda _m: None)
        out[agg] = d
    return out


def test_threat_model_refuses_views_its_adversary_cannot_have() -> None:
    with pytest.raises(ValueError, match="outsider cannot observe server-inbox"):
        ThreatModel(adversary=Adversary.OUTSIDER, observes=frozenset({View.SERVER_INBOX}))
    with pytest.raises(ValueError, match="malicious-clients cannot observe aggregate"):
        ThreatModel(adversary=Adversary.MALICIOUS_CLIENTS, observes=frozenset({View.AGGREGATE}))


def test_outsider_gets_released_models_only(runs: dict[str, Path]) -> None:
    p = observe_run(runs["plain"], OUTSIDER, rng=np.random.default_rng(0))
    obs = p.observation
    assert obs.released is not None and set(obs.released) == {u.name for u in obs.units}
    assert obs.inbox is None and obs.aggregate is None and obs.own is None
    assert obs.public is None and obs.round_index is None
    # the challenge hides membership: the truth holds it, the observation does not
    assert obs.challenge is not None
    for g, rec in obs.challenge.items():
        labels = p.truth.membership[g]
        assert len(labels) == len(rec) and 0 < labels.mean() < 1


def test_server_without_secagg_sees_each_update(runs: dict[str, Path]) -> None:
    p = observe_run(runs["plain"], SERVER, rng=np.random.default_rng(0))
    obs, truth = p.observation, p.truth
    assert obs.inbox is not None and obs.aggregate is not None and obs.round_index == 0
    assert set(obs.inbox) == set(truth.updates)
    for c, v in obs.inbox.items():
        np.testing.assert_array_equal(v, truth.updates[c])
    np.testing.assert_allclose(obs.aggregate, sum(truth.updates.values()), rtol=1e-6, atol=1e-6)


def test_server_under_secagg_sees_masked_vectors_and_the_sum(runs: dict[str, Path]) -> None:
    p = observe_run(runs["secagg"], SERVER, rng=np.random.default_rng(0))
    obs, truth = p.observation, p.truth
    assert obs.encoding.kind == "secagg" and obs.inbox is not None and obs.aggregate is not None
    for c, v in obs.inbox.items():
        assert np.issubdtype(v.dtype, np.unsignedinteger)  # a masked integer vector
        # masks look uniform: about half of the coordinates have the top bit set
        top = (v.astype(np.uint64) >> np.uint64(obs.encoding.bits - 1)).mean()
        assert 0.4 < top < 0.6, c
    true_sum = sum(truth.updates.values())
    assert np.abs(obs.aggregate - true_sum).max() < 4 * 2.0**-obs.encoding.scale_bits * 4


def test_replayed_first_round_is_the_runs_first_round(runs: dict[str, Path]) -> None:
    a = observe_run(runs["plain"], SERVER, rng=np.random.default_rng(0)).truth.updates
    b = observe_run(runs["plain"], SERVER, rng=np.random.default_rng(1)).truth.updates
    for c in a:
        np.testing.assert_array_equal(a[c], b[c])


def test_missing_run_directory_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(AttackSetupError, match="config.toml does not exist"):
        observe_run(tmp_path, OUTSIDER, rng=np.random.default_rng(0))


def test_registry_lists_builtins_with_threat_models() -> None:
    names = ATTACKS.names()
    for n in ("mia-loss", "mia-lira", "inversion-inbox", "inversion-aggregate"):
        assert n in names
    assert ATTACKS.entry("mia-loss").description.startswith("outsider [released-models]")
    with pytest.raises(RegistryError, match="did you mean 'mia-loss'.*Registered: "):
        ATTACKS.get("mia-los")


def test_parameters_are_typed_and_unknown_ones_named() -> None:
    attack = make_attack("mia-lira", {"shadows": "3"})
    assert isinstance(attack, LiRAOffline) and attack.shadows == 3
    with pytest.raises(AttackParameterError, match="no parameter 'shadow'.*shadows"):
        make_attack("mia-lira", {"shadow": "3"})
    with pytest.raises(AttackParameterError, match="is not an int"):
        make_attack("mia-lira", {"shadows": "many"})


def test_ground_truth_reaches_only_the_metric_step(runs: dict[str, Path]) -> None:
    register_attack(Spy)
    try:
        Spy.truths.clear()
        first = run_attack("test-spy", runs["secagg"], seed=5)
        # run() saw its view in its own process: inbox and aggregate, nothing of the truth
        assert first.result.metrics["inbox"] == 4.0 and first.result.metrics["aggregate"] == 1.0
        assert first.result.meta["truth_in_view"] == "no"
        # evaluate() ran here, with the truth, assembled after the guesses came back
        (truth,) = Spy.truths
        assert isinstance(truth, GroundTruth) and first.result.metrics["clients"] == 4.0
        again = run_attack("test-spy", runs["secagg"], seed=5)
        assert again.result.metrics["draw"] == first.result.metrics["draw"]  # seeded
        drawn = run_attack("test-spy", runs["secagg"])
        assert isinstance(drawn.seed, int)  # a missing seed is drawn and reported
    finally:
        ATTACKS.unregister("test-spy")


def _truth_digests(truth: GroundTruth) -> set[bytes]:
    digests = {array_digest(m) for m in truth.membership.values()}
    digests |= {array_digest(r.x) for groups in truth.train.values() for r in groups.values()}
    return digests | {array_digest(u) for u in truth.updates.values()}


def test_probe_finds_the_truth_where_it_is_reachable(runs: dict[str, Path]) -> None:
    # The control: in the framework's process the probe finds the truth and the run directory,
    # so its silence below means something.
    prepared = observe_run(runs["plain"], OutsiderProbe.threat_model, rng=numpy_rng(7, "x"))
    found = survey(prepared.observation)
    assert found.forbidden.get("GroundTruth", 0) >= 1
    assert str(runs["plain"]) in found.run_dirs
    assert found.digests & _truth_digests(prepared.truth)


@pytest.mark.parametrize(("probe", "run"), [(OutsiderProbe, "plain"), (ServerProbe, "secagg")])
def test_hostile_probe_reaches_nothing_outside_its_view(
    runs: dict[str, Path], probe: type[Attack], run: str
) -> None:
    register_attack(probe)
    try:
        res = run_attack(probe.name, runs[run], seed=7, echo=lambda _m: None).result
    finally:
        ATTACKS.unregister(probe.name)
    # the same challenge draw as run_attack's (numpy_rng(seed, "attack-challenge"))
    prepared = observe_run(runs[run], probe.threat_model, rng=numpy_rng(7, "attack-challenge"))
    digests = {bytes(d) for d in res.outputs["digests"]}
    view = prepared.observation
    # it saw its view (masked inbox vectors differ between replays: fresh masks)
    own = view.released or {"aggregate": view.aggregate}
    assert {array_digest(np.asarray(a)) for a in own.values()} <= digests
    assert not digests & _truth_digests(prepared.truth), "ground truth reached the attack"
    assert res.metrics["forbidden_objects"] == 0, res.meta["forbidden"]
    assert res.metrics["run_dirs"] == 0, res.meta["run_dirs"]
    assert res.metrics["cwd_entries"] == 0, res.meta["cwd"]  # an empty working directory
    run_path = str(runs[run])
    assert not [s for s in res.notes if run_path in s or s in run_path and len(s) > 5]
    assert res.metrics["objects_seen"] > 1000  # it did look


def test_malicious_clients_see_only_their_own_data_and_updates(runs: dict[str, Path]) -> None:
    tm = ThreatModel(
        adversary=Adversary.MALICIOUS_CLIENTS,
        observes=frozenset({View.OWN_CLIENT, View.RELEASED_MODELS}),
    )
    p = observe_run(runs["secagg"], tm, rng=np.random.default_rng(0), adversary_clients=(1, 3))
    obs = p.observation
    assert obs.own is not None and set(obs.own) == {1, 3}
    assert obs.own_updates is not None and set(obs.own_updates) == {1, 3}
    np.testing.assert_array_equal(obs.own_updates[1], p.truth.updates[1])
    assert obs.inbox is None and obs.aggregate is None


def test_next_round_view_continues_from_the_checkpoint(tmp_path: Path) -> None:
    d = tmp_path / "run"
    cfg = tiny(federation={"aggregator": "plain"}, dp={"target_epsilon": float("inf")})
    run_experiment(cfg, d, progress=False, echo=lambda _m: None)
    p = observe_run(d, SERVER, rng=np.random.default_rng(0), observed_round="next")
    assert p.observation.round_index == cfg.rounds
    assert p.observation.broadcast is not None and p.observation.released is not None
    for name, vec in p.observation.broadcast.items():
        np.testing.assert_array_equal(vec, p.observation.released[name])


def test_the_isolated_attack_gets_every_field_of_its_observation(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """The sandbox's file carries the whole Observation (it once dropped the noise multipliers,
    so the inversion attack never saw the DP noise scale)."""
    import dataclasses

    from privfed.attack_api import Observation, ShadowModel
    from privfed.attack_sandbox import observation_from_tree, observation_to_tree
    from privfed.checkpoint import read_state, write_state

    every = ThreatModel(
        adversary=Adversary.HONEST_BUT_CURIOUS_SERVER,
        observes=frozenset(
            {View.SERVER_INBOX, View.AGGREGATE, View.RELEASED_MODELS, View.PUBLIC_DATA}
        ),
    )
    obs = observe_run(runs["plain"], every, rng=numpy_rng(0, "t")).observation
    assert obs.noise_multipliers and all(
        g["image"] > 0 for g in obs.noise_multipliers.values()
    )  # epsilon 8: the planned sigmas are in the server's view
    unit = obs.units[0].name
    obs = dataclasses.replace(
        obs,
        shadows=(
            ShadowModel(
                released={unit: np.arange(3.0)}, members={"image": np.array([True, False])}
            ),
        ),
    )
    path = tmp_path / "view.state"
    write_state(path, {"observation": observation_to_tree(obs)})
    back = observation_from_tree(read_state(path)["observation"])
    for f in dataclasses.fields(Observation):
        a, b = getattr(obs, f.name), getattr(back, f.name)
        assert array_digest_tree(a) == array_digest_tree(b), f.name


def array_digest_tree(value: object) -> object:
    """A comparable form of nested mappings, sequences, records and arrays."""
    import dataclasses

    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, array_digest(value))
    if isinstance(value, Mapping):
        return {str(k): array_digest_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [array_digest_tree(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: array_digest_tree(getattr(value, f.name)) for f in dataclasses.fields(value)
        }
    if isinstance(value, (frozenset, set)):
        return sorted(str(v) for v in value)
    return value
