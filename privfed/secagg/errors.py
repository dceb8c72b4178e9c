"""Errors raised by the secure-aggregation protocol.

Every error is a :class:`privfed.errors.PrivfedError`. The ones the engine acts on are
:class:`SecAggAbort` (the round cannot finish: skip it) and its child :class:`TooFewSurvivors`.
:class:`ProtocolViolation` marks one party's message as unusable; the receiving state machine
drops that party from the round instead of failing it.
"""

from __future__ import annotations

from privfed.errors import PrivfedError


class SecAggError(PrivfedError):
    """Base class of every secure-aggregation error."""


class SecAggAbort(SecAggError):
    """The protocol round cannot complete; nothing about any input is revealed.

    Attributes:
        stage: the protocol stage at which the round stopped (e.g. ``"unmask"``).
        reason: what went wrong and what to change.
    """

    def __init__(self, stage: str, reason: str) -> None:
        self.stage = stage
        self.reason = reason
        super().__init__(f"secure aggregation aborted at stage {stage!r}: {reason}")


class TooFewSurvivors(SecAggAbort):
    """Fewer than ``needed`` parties remain where the threshold requires ``needed``.

    Attributes:
        needed: the threshold that was not met.
        alive: how many parties were still there.
    """

    def __init__(self, stage: str, *, needed: int, alive: int, where: str = "the cohort") -> None:
        self.needed = needed
        self.alive = alive
        super().__init__(
            stage,
            f"only {alive} surviving parties in {where}, threshold is {needed}; lower "
            "secagg.threshold, raise the cohort size (or graph degree), or expect fewer dropouts",
        )


class ClientRefusal(SecAggAbort):
    """A client refused a server request that would break the protocol's guarantees."""


class ProtocolViolation(SecAggError):
    """A message broke the protocol (wrong stage, sender, session, length or duplicate).

    Attributes:
        sender: the party whose message is unusable, if known.
    """

    def __init__(self, message: str, *, sender: int | None = None) -> None:
        self.sender = sender
        super().__init__(message)


class StageError(ProtocolViolation):
    """A message or call arrived at the wrong protocol stage."""

    def __init__(self, *, expected: str, received: str, party: str) -> None:
        super().__init__(f"{party}: expected stage {expected!r}, received {received!r}")


class MessageError(ProtocolViolation):
    """A wire message is malformed: bad magic, version, type, length or field."""


class EnvelopeError(SecAggError):
    """An encrypted share failed authentication (one opaque error for every cause)."""

    def __init__(self) -> None:
        super().__init__("share envelope failed authentication")


class SignatureError(SecAggError):
    """A signature did not verify under the key registry (one opaque error for every cause)."""

    def __init__(self) -> None:
        super().__init__("signature failed verification under the key registry")
