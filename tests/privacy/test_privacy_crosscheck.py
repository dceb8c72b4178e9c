"""Cross-checks of privfed's epsilon against independent accountants and against Opacus itself.

Independent accountant: Google's dp-accounting (RDP and PLD over
PoissonSampledDpEvent(q, GaussianDpEvent(sigma)) self-composed). The heterogeneous history below
is shaped like one client's ledger on one data source in a real run: several tasks reuse the
same records with different sample rates (different batch sizes / dataset views), and the noise
multiplier changes once (re-calibration).
"""

from __future__ import annotations

import warnings

import dp_accounting
import pytest
import torch
from dp_accounting import pld, rdp
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from privfed.privacy.accounting import DEFAULT_ORDERS, DPEvent, epsilon_for, prv_epsilon
from privfed.privacy.ledger import SourceLedger

DELTA = 1e-5

# (sigma, q, steps) in the order a client's source ledger would record them.
RUN_LEDGER = [
    (1.1, 0.02, 400),  # task "digit", batch 16 of 800 records
    (1.1, 0.04, 200),  # task "parity", batch 32
    (1.1, 0.02, 400),  # "digit" again next participation
    (0.9, 0.01, 300),  # "ge5", after re-calibration, batch 8
    (1.1, 0.04, 200),
]


def dp_accounting_event(sigma: float, q: float, steps: int) -> dp_accounting.DpEvent:
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )


def run_ledger() -> SourceLedger:
    ledger = SourceLedger(7, "digits", delta=DELTA, target_epsilon=float("inf"))
    tasks = ["digit", "parity", "digit", "ge5", "parity"]
    for (sigma, q, steps), task in zip(RUN_LEDGER, tasks, strict=True):
        ledger.record(noise_multiplier=sigma, sample_rate=q, steps=steps, task=task)
    return ledger


def test_rdp_matches_dp_accounting_self_composed() -> None:
    ledger = SourceLedger(0, "s", delta=DELTA, target_epsilon=float("inf"))
    ledger.record(noise_multiplier=1.1, sample_rate=0.01, steps=10_000, task="t")
    acc = rdp.RdpAccountant(orders=list(DEFAULT_ORDERS))
    acc.compose(dp_accounting_event(1.1, 0.01, 10_000))
    assert ledger.epsilon() == pytest.approx(acc.get_epsilon(DELTA), rel=1e-3)
    assert round(acc.get_epsilon(DELTA), 4) == 5.6320


def test_rdp_matches_dp_accounting_heterogeneous() -> None:
    ledger = run_ledger()
    acc = rdp.RdpAccountant(orders=list(DEFAULT_ORDERS))
    for sigma, q, steps in RUN_LEDGER:
        acc.compose(dp_accounting_event(sigma, q, steps))
    assert ledger.epsilon() == pytest.approx(acc.get_epsilon(DELTA), rel=1e-3)
    # and with dp-accounting's own (denser) orders: ours can only be equal or looser
    dense = rdp.RdpAccountant()
    dense.compose(dp_accounting.ComposedDpEvent([dp_accounting_event(*e) for e in RUN_LEDGER]))
    assert dense.get_epsilon(DELTA) <= ledger.epsilon() * (1 + 1e-3)
    assert ledger.epsilon() == pytest.approx(dense.get_epsilon(DELTA), rel=0.02)


def test_prv_near_pld_and_below_rdp_heterogeneous() -> None:
    ledger = run_ledger()
    prv = ledger.epsilon(accountant="prv")
    assert prv == prv_epsilon(ledger.events, delta=DELTA)
    acc = pld.PLDAccountant()
    for sigma, q, steps in RUN_LEDGER:
        acc.compose(dp_accounting_event(sigma, q, steps))
    pld_eps = acc.get_epsilon(DELTA)
    assert prv == pytest.approx(pld_eps, rel=0.03)
    assert prv < ledger.epsilon(accountant="rdp")


def test_prv_known_answer_self_composed() -> None:
    # Field notes: Opacus PRV 5.2029 = prv-accountant upper bound; dp-accounting PLD 5.1926.
    eps = prv_epsilon([DPEvent(noise_multiplier=1.1, sample_rate=0.01, steps=10_000)], delta=DELTA)
    assert eps == pytest.approx(5.2029, abs=1e-3)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ledger_matches_opacus_privacy_engine() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = (x[:, 0] > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    model = nn.Linear(5, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = PrivacyEngine(accountant="rdp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, optimizer, loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            poisson_sampling=True,
        )
    sample_rate = 1 / len(loader)  # what make_private gives the accountant
    ledger = SourceLedger(0, "tiny", delta=DELTA, target_epsilon=float("inf"))
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(3):
        if epoch == 2:
            optimizer.noise_multiplier = 1.5  # re-calibrated noise: a second event
        for xb, yb in loader:
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()
            ledger.record(
                noise_multiplier=optimizer.noise_multiplier,
                sample_rate=sample_rate,
                steps=1,
                task="tiny",
            )
    history = engine.accountant.history
    assert len(history) == 2 and sum(h[2] for h in history) == 3 * len(loader)
    assert [(e.noise_multiplier, e.sample_rate, e.steps) for e in ledger.events] == [
        tuple(h) for h in history
    ]
    assert ledger.epsilon() == pytest.approx(engine.get_epsilon(DELTA), rel=1e-9)
    events = [DPEvent(noise_multiplier=s, sample_rate=q, steps=t) for s, q, t in history]
    assert epsilon_for(events, delta=DELTA) == ledger.epsilon()
