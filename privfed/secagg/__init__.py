"""Secure aggregation with dropout recovery (Bonawitz et al. 2017; Bell et al. 2020).

Bonawitz et al. (CCS 2017) double masking over a complete graph, and the k-regular-graph variant
of Bell et al. (CCS 2020, SecAgg+).

Public entry points:

* :func:`secure_sum` -- sum integer vectors modulo ``2**bits`` through the real protocol.
* :func:`run_session` -- the server's driver against any :class:`ClientParties` (clients in this
  process: :class:`LocalParties`; several workers: :class:`RoutedParties`; elsewhere: anything
  that moves the bytes).
* :class:`SecAggConfig` -- parameters (``security = "malicious"`` by default);
  :func:`check_no_overflow` -- the modulus rule.
* :class:`SecAggClient`, :class:`SecAggServer` -- the two state machines, for tests and attacks
  that play a dishonest party.
* :func:`make_pki`, :class:`KeyRegistry`, :class:`ClientIdentity` -- the simulated PKI of the
  malicious setting.
* :class:`SecAggAggregator` -- the engine adapter (float vectors in, float sum out).

See ``docs/secure-aggregation.md`` for the protocol as built and its threat model.
"""

from __future__ import annotations

from privfed.secagg.aggregator import SecAggAggregator
from privfed.secagg.client import SecAggClient
from privfed.secagg.config import SecAggConfig, check_no_overflow
from privfed.secagg.errors import (
    ClientRefusal,
    EnvelopeError,
    MessageError,
    ProtocolViolation,
    SecAggAbort,
    SecAggError,
    SignatureError,
    StageError,
    TooFewSurvivors,
)
from privfed.secagg.identity import PKI, ClientIdentity, KeyRegistry, make_pki
from privfed.secagg.messages import Stage
from privfed.secagg.parties import (
    ClientParties,
    LocalParties,
    PartyCosts,
    PartyFailure,
    RoutedParties,
)
from privfed.secagg.server import SecAggServer
from privfed.secagg.simulate import PHASES, SecureSumResult, run_session, secure_sum

__all__ = [
    "PHASES",
    "PKI",
    "ClientIdentity",
    "ClientParties",
    "ClientRefusal",
    "EnvelopeError",
    "KeyRegistry",
    "LocalParties",
    "MessageError",
    "PartyCosts",
    "PartyFailure",
    "RoutedParties",
    "ProtocolViolation",
    "SecAggAbort",
    "SecAggAggregator",
    "SecAggClient",
    "SecAggConfig",
    "SecAggError",
    "SecAggServer",
    "SecureSumResult",
    "SignatureError",
    "Stage",
    "StageError",
    "TooFewSurvivors",
    "check_no_overflow",
    "make_pki",
    "run_session",
    "secure_sum",
]
