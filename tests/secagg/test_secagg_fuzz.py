"""Single-message mutation campaign: the exact sum, dropped clients, or a clean abort.

Every example runs a real session (the client and server state machines, real cryptography)
through :func:`~privfed.secagg.simulate.secure_sum` with a transport that mutates exactly one
message: a bit flip, truncation, extension, replay, drop, or substitution by another client's
message of the same stage, by the same message of another round, or of another session, at
every stage and in both directions, on both graphs and in both security settings. The outcome
must be one of

* the exact sum of the inputs of the clients the result says it included -- where a client
  whose own masked vector was altered on its own channel counts with the input that vector
  carries (under the authenticated-channel model only that client can write there, and a
  client can always choose its input);
* a clean abort (:class:`~privfed.secagg.errors.SecAggAbort`, incl. ``TooFewSurvivors``);

never a wrong sum, never another exception, never a hang (each session runs under an alarm).

CI runs 4 x 250 derandomized examples; ``-m slow`` runs a larger random campaign.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privfed.secagg import SecAggAbort, SecAggConfig, secure_sum
from privfed.secagg.identity import PKI, make_pki
from privfed.secagg.messages import SERVER_ID, MaskedInput
from privfed.secagg.prg import DeterministicRandom

LENGTH = 8
BITS = 32
SETUPS = {
    ("complete", "semi-honest"): (6, SecAggConfig(security="semi-honest")),
    ("complete", "malicious"): (6, SecAggConfig()),
    ("harary", "semi-honest"): (8, SecAggConfig(security="semi-honest", graph="harary", degree=4)),
    ("harary", "malicious"): (8, SecAggConfig(graph="harary", degree=4)),
}
KINDS = (
    "bitflip",
    "truncate",
    "extend",
    "replay",
    "drop",
    "other-client",
    "other-round",
    "other-session",
)
#: (phase, direction) pairs that carry a message; "down" = server -> client.
SLOTS = (
    ("advertise_keys", "up"),
    ("share_keys", "down"),
    ("share_keys", "up"),
    ("masked_input", "down"),
    ("masked_input", "up"),
    ("consistency_check", "down"),
    ("consistency_check", "up"),
    ("unmask", "down"),
    ("unmask", "up"),
)


@dataclass(frozen=True)
class Mutation:
    """Exactly one message to alter: which, and how."""

    phase: str
    direction: str
    party: int  # the client whose message (up) or whose inbox (down)
    kind: str
    position: int  # bit position / byte count, taken modulo the message length


@cache
def _setup(graph: str, security: str) -> tuple[int, SecAggConfig, dict[int, np.ndarray], PKI]:
    n, cfg = SETUPS[(graph, security)]
    rng = np.random.default_rng(7)
    inputs = {c: rng.integers(0, 2**BITS, size=LENGTH, dtype=np.uint64) for c in range(n)}
    return n, cfg, inputs, make_pki(range(n), DeterministicRandom(b"fuzz-pki"))


@cache
def _donor(graph: str, security: str, round_index: int, seed: bytes) -> dict[tuple, bytes]:
    """Every message of an honest session (for substitutions from another round/session)."""
    n, cfg, inputs, pki = _setup(graph, security)
    log: dict[tuple, bytes] = {}

    def record(phase: str, sender: int, receiver: int, data: bytes) -> list[bytes]:
        log[(phase, sender, receiver)] = data
        return [data]

    secure_sum(
        inputs,
        config=cfg,
        round_index=round_index,
        model_hash=b"m",
        random_bytes=DeterministicRandom(seed),
        transport=record,
        identities=pki.identities,
        registry=pki.registry,
    )
    return log


@dataclass
class Mutator:
    """The transport: delivers every message unchanged except the one :class:`Mutation`."""

    graph: str
    security: str
    mutation: Mutation
    rng: np.random.Generator
    applied: bool = False
    original: bytes = b""
    delivered: list[bytes] = field(default_factory=list)
    seen: dict[tuple[str, str], list[tuple[int, bytes]]] = field(default_factory=dict)

    def __call__(self, phase: str, sender: int, receiver: int, data: bytes) -> list[bytes]:
        direction = "down" if sender == SERVER_ID else "up"
        party = receiver if direction == "down" else sender
        m = self.mutation
        hit = not self.applied and (phase, direction, party) == (m.phase, m.direction, m.party)
        seen = self.seen.setdefault((phase, direction), [])
        out = self._mutate(phase, sender, receiver, data, seen) if hit else [data]
        seen.append((party, data))
        if hit:
            self.applied, self.original, self.delivered = True, data, out
        return out

    def _mutate(
        self, phase: str, sender: int, receiver: int, data: bytes, seen: list[tuple[int, bytes]]
    ) -> list[bytes]:
        m = self.mutation
        if m.kind == "bitflip":
            pos = m.position % (8 * len(data))
            flipped = bytearray(data)
            flipped[pos // 8] ^= 1 << (pos % 8)
            return [bytes(flipped)]
        if m.kind == "truncate":
            return [data[: -(1 + m.position % len(data))]]
        if m.kind == "extend":
            return [data + self.rng.bytes(1 + m.position % 64)]
        if m.kind == "replay":
            return [data, data]
        if m.kind == "drop":
            return []
        if m.kind == "other-client" and seen:
            return [seen[m.position % len(seen)][1]]
        key = (phase, sender, receiver)
        if m.kind == "other-round":
            return [_donor(self.graph, self.security, 1, b"donor-round").get(key, data[:-1])]
        # "other-session", and "other-client" when this is the first message of its kind
        return [_donor(self.graph, self.security, 0, b"donor-session").get(key, data[:-1])]


class Hang(Exception):
    """A session ran past its alarm."""


@contextlib.contextmanager
def alarm(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` if the block runs longer than ``seconds`` (Unix; else no guard)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def ring(signum: int, frame: object) -> None:
        raise Hang(f"session still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_mutated(graph: str, security: str, mutation: Mutation) -> str:
    """Run one mutated session and check the outcome; return its kind (for statistics)."""
    n, cfg, inputs, pki = _setup(graph, security)
    mutator = Mutator(graph, security, mutation, np.random.default_rng(mutation.position))
    try:
        with alarm(60):
            res = secure_sum(
                inputs,
                config=cfg,
                round_index=0,
                model_hash=b"m",
                random_bytes=DeterministicRandom(b"session"),
                transport=mutator,
                identities=pki.identities,
                registry=pki.registry,
            )
    except SecAggAbort:
        assert mutator.applied, "an unmutated session aborted"
        return "abort"
    assert mutator.applied, f"the mutation never found its message: {mutation}"
    effective = {c: inputs[c].astype(np.uint64) for c in range(n)}
    m = mutation
    if m.phase == "masked_input" and m.direction == "up" and m.party in res.included:
        # The server summed what arrived on the client's own channel: that is its input now.
        before = MaskedInput.decode(mutator.original).vector.astype(np.uint64)
        after = MaskedInput.decode(mutator.delivered[0]).vector.astype(np.uint64)
        effective[m.party] = (effective[m.party] + after - before) % np.uint64(2**BITS)
    want = np.zeros(LENGTH, dtype=np.uint64)
    for c in res.included:
        want = (want + effective[c]) % np.uint64(2**BITS)
    assert np.array_equal(res.total.astype(np.uint64), want), f"WRONG SUM under {mutation}"
    return "exact" if len(res.included) == n else "dropped"


def mutations(graph: str, security: str) -> st.SearchStrategy[Mutation]:
    n = SETUPS[(graph, security)][0]
    slots = [s for s in SLOTS if security == "malicious" or s[0] != "consistency_check"]
    return st.builds(
        lambda slot, party, kind, position: Mutation(slot[0], slot[1], party, kind, position),
        st.sampled_from(slots),
        st.integers(0, n - 1),
        st.sampled_from(KINDS),
        st.integers(0, 2**20),
    )


OUTCOMES: dict[tuple[str, str], dict[str, int]] = {}


def _campaign(graph: str, security: str, mutation: Mutation) -> None:
    kind = run_mutated(graph, security, mutation)
    tally = OUTCOMES.setdefault((graph, security), {})
    tally[kind] = tally.get(kind, 0) + 1


@pytest.mark.parametrize("graph,security", list(SETUPS))
@settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
@given(data=st.data())
def test_single_message_mutations_never_give_a_wrong_sum(
    graph: str, security: str, data: st.DataObject
) -> None:
    _campaign(graph, security, data.draw(mutations(graph, security)))


def test_the_campaign_saw_every_kind_of_outcome() -> None:
    """The campaign above is not vacuous: it produced exact sums, dropped clients and aborts."""
    if len(OUTCOMES) < len(SETUPS):
        pytest.skip("run together with the campaign")
    for setup, tally in OUTCOMES.items():
        assert sum(tally.values()) >= 250, setup
        assert {"exact", "dropped"} <= set(tally), (setup, tally)
    assert sum(sum(t.values()) for t in OUTCOMES.values()) >= 1000
    assert any("abort" in t for t in OUTCOMES.values()), OUTCOMES


@pytest.mark.parametrize(
    "mutation",
    [
        Mutation("masked_input", "up", 2, "bitflip", 8 * 200),  # inside the vector: its input
        Mutation("masked_input", "down", 1, "other-client", 0),  # another client's envelopes
        Mutation("unmask", "up", 3, "bitflip", 8 * 80 + 3),  # a share value
        Mutation("share_keys", "up", 0, "bitflip", 8 * 60),  # the seed commitment
        Mutation("consistency_check", "down", 4, "other-session", 0),
        Mutation("unmask", "down", 5, "other-round", 0),
    ],
)
@pytest.mark.parametrize("graph", ["complete", "harary"])
def test_hand_picked_mutations(graph: str, mutation: Mutation) -> None:
    run_mutated(graph, "malicious", mutation)


@pytest.mark.slow
@pytest.mark.parametrize("graph,security", list(SETUPS))
@settings(max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_large_mutation_campaign(graph: str, security: str, data: st.DataObject) -> None:
    run_mutated(graph, security, data.draw(mutations(graph, security)))
