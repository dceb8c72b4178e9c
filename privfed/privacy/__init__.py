"""Privacy accounting for privfed: pure math (:mod:`.accounting`) and ledgers (:mod:`.ledger`)."""

from privfed.privacy.accounting import (
    DEFAULT_ORDERS,
    DPEvent,
    calibrate_noise,
    epsilon_from_rdp,
    prv_epsilon,
    rdp_vector,
)
from privfed.privacy.ledger import PrivacyLedger, SourceLedger, SourceSummary

__all__ = [
    "DEFAULT_ORDERS",
    "DPEvent",
    "PrivacyLedger",
    "SourceLedger",
    "SourceSummary",
    "calibrate_noise",
    "epsilon_from_rdp",
    "prv_epsilon",
    "rdp_vector",
]
