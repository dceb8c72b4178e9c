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

from typing import TYPE_CHECKING

from privfed.lazy import lazy_exports

if TYPE_CHECKING:
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

# Where each public name lives. They are imported on first use (PEP 562), so that importing a
# submodule (``privfed.secagg.config`` for the configuration) does not import the protocol.
_LAZY: dict[str, str] = {
    "PHASES": "privfed.secagg.simulate",
    "PKI": "privfed.secagg.identity",
    "ClientIdentity": "privfed.secagg.identity",
    "ClientParties": "privfed.secagg.parties",
    "ClientRefusal": "privfed.secagg.errors",
    "EnvelopeError": "privfed.secagg.errors",
    "KeyRegistry": "privfed.secagg.identity",
    "LocalParties": "privfed.secagg.parties",
    "MessageError": "privfed.secagg.errors",
    "PartyCosts": "privfed.secagg.parties",
    "PartyFailure": "privfed.secagg.parties",
    "RoutedParties": "privfed.secagg.parties",
    "ProtocolViolation": "privfed.secagg.errors",
    "SecAggAbort": "privfed.secagg.errors",
    "SecAggAggregator": "privfed.secagg.aggregator",
    "SecAggClient": "privfed.secagg.client",
    "SecAggConfig": "privfed.secagg.config",
    "SecAggError": "privfed.secagg.errors",
    "SecAggServer": "privfed.secagg.server",
    "SecureSumResult": "privfed.secagg.simulate",
    "SignatureError": "privfed.secagg.errors",
    "Stage": "privfed.secagg.messages",
    "StageError": "privfed.secagg.errors",
    "TooFewSurvivors": "privfed.secagg.errors",
    "check_no_overflow": "privfed.secagg.config",
    "make_pki": "privfed.secagg.identity",
    "run_session": "privfed.secagg.simulate",
    "secure_sum": "privfed.secagg.simulate",
}


__getattr__ = lazy_exports(__name__, _LAZY, globals())
