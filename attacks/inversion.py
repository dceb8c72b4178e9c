"""Gradient inversion against what the server observes.

The attack reads the first linear layer of an update. For a layer ``z = W x + b`` every SGD step
adds ``-lr * sum_i g_ij x_i`` to row ``j`` of ``W`` and ``-lr * sum_i g_ij`` to ``b_j``, where
``g_ij`` is the loss gradient at unit ``j`` for record ``i``. Summed over local steps, row ``j``
of the update divided by its bias entry is therefore an affine combination of the records that
reached unit ``j``; when one record alone did (one record per step, or a ReLU unit that only
one record activates) the ratio *is* that record, exactly. This is the analytic recovery of
Phong et al. ("Privacy-Preserving Deep Learning via Additively Homomorphic Encryption", 2017,
Sec. 3.2), the closed form that optimization attacks such as DLG (Zhu, Liu, Han, "Deep Leakage
from Gradients", NeurIPS 2019) and Inverting Gradients (Geiping, Bauermeister, Droge, Moeller,
NeurIPS 2020) approximate by gradient matching; for fully connected layers Geiping et al.
(Sec. 4, Prop. D.1) give the same ratio.

* :class:`AnalyticInversion` attacks one client's message in the server's inbox: the plain
  update with ``aggregator = "plain"``, the masked vector under secure aggregation (decoded with
  the public fixed-point parameters, the best a server can do with it).
* :class:`AggregateInversion` attacks the aggregate, which is all the server learns under secure
  aggregation.

Every candidate is clipped to the data range ``[0, 1]``; the attacker ranks candidates itself
(most coordinates already inside the range, then largest bias entry) and the metric step scores
its top candidate (and, as an oracle upper bound, the best candidate) by PSNR against the
closest true training record, next to the prior-only baseline: the data source's mean image
scored the same way.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from attacks.metrics import best_psnr
from privfed.attack_api import (
    Adversary,
    Attack,
    AttackResult,
    GroundTruth,
    Observation,
    ThreatModel,
    View,
)
from privfed.secagg.field import decode_fixed_point
from privfed.unit import UnitSpec


def first_layer_slices(unit: UnitSpec) -> tuple[slice, slice, tuple[int, int]]:
    """Where the first linear layer's weight and bias sit in ``unit``'s flat vector.

    Returns:
        (weight slice, bias slice, weight shape (out, in)).
    """
    if unit.model != "mlp" or unit.input_spec.kind == "token_ids":
        raise ValueError(
            f"unit {unit.name}: analytic inversion reads the input off the first linear layer, "
            f"which only an mlp on float inputs has (this unit: model {unit.model!r}, "
            f"{unit.input_spec.describe()}); use inversion-dlg"
        )
    offset = 0
    params = list(unit.build().named_parameters())
    for i, (name, p) in enumerate(params):
        n = p.numel()
        if p.dim() == 2 and name.endswith("weight"):
            nxt_name, nxt = params[i + 1]
            if not nxt_name.endswith("bias") or nxt.shape[0] != p.shape[0]:
                break
            w = slice(offset, offset + n)
            b = slice(offset + n, offset + n + nxt.numel())
            return w, b, (int(p.shape[0]), int(p.shape[1]))
        offset += n
    raise ValueError(f"unit {unit.name}: no linear layer with a bias to invert")


def invert_first_layer(
    update: np.ndarray, unit: UnitSpec, *, tol: float = 1e-8
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate inputs ``dW[j] / db[j]`` of every unit ``j`` with a non-zero bias update.

    Args:
        update: the unit's slice of an update (float).
        unit: its architecture.
        tol: bias entries with smaller magnitude are skipped (no record reached the unit).

    Returns:
        (candidates, unclipped rows x features; ``|db_j|`` per candidate).
    """
    w, b, shape = first_layer_slices(unit)
    dw = np.asarray(update[w], dtype=np.float64).reshape(shape)
    db = np.asarray(update[b], dtype=np.float64)
    keep = np.abs(db) > tol
    if not keep.any():
        return np.zeros((0, shape[1])), np.zeros(0)
    return dw[keep] / db[keep, None], np.abs(db[keep])


def rank_candidates(candidates: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Order candidates by the attacker's own plausibility score (no ground truth).

    Most coordinates already in ``[0, 1]`` first, then the largest ``|db_j|``.
    """
    inside = ((candidates >= -0.05) & (candidates <= 1.05)).mean(axis=1)
    return np.lexsort((-weight, -inside))


def _to_float(vec: np.ndarray, obs: Observation) -> np.ndarray:
    enc = obs.encoding
    if enc.kind == "secagg+ddg" and np.issubdtype(np.asarray(vec).dtype, np.integer):
        raise ValueError(
            "the inbox vectors of a client-level distributed-DP run are rotated, noised and "
            "masked integers: there is no first layer to read in one of them; attack the "
            "aggregate instead (inversion-aggregate)"
        )
    if enc.kind == "secagg" and np.issubdtype(np.asarray(vec).dtype, np.integer):
        return decode_fixed_point(np.asarray(vec), bits=enc.bits, scale_bits=enc.scale_bits)
    return np.asarray(vec, dtype=np.float64)


def _unit(obs: Observation, name: str | None) -> UnitSpec:
    if name is None:
        return obs.units[0]
    for u in obs.units:
        if u.name == name:
            return u
    raise ValueError(f"unknown unit {name!r}; the run has {', '.join(u.name for u in obs.units)}")


class _Inversion(Attack):
    """Shared run/metric code; subclasses pick the observed vector."""

    def __init__(self, *, unit: str | None = None, client: int = 0) -> None:
        self.unit = unit
        self.client = int(client)

    def _vector(self, obs: Observation) -> np.ndarray:
        raise NotImplementedError

    def _targets(self, obs: Observation) -> tuple[int, ...]:
        raise NotImplementedError

    def run(self, observation: Observation, *, rng: np.random.Generator) -> AttackResult:
        """Recover candidate records from the first layer of the observed vector."""
        del rng  # analytic: no randomness
        unit = _unit(observation, self.unit)
        vec = _to_float(self._vector(observation), observation)
        if not np.isfinite(vec).all():
            raise ValueError(
                "the observed vector has non-finite entries (NaN/inf); the run's training "
                "diverged or produced an invalid update, so there is nothing meaningful to invert"
            )
        cand, weight = invert_first_layer(observation.unit_slice(vec, unit.name), unit)
        order = rank_candidates(cand, weight)
        ranked = np.clip(cand[order], 0.0, 1.0) if len(cand) else cand
        return AttackResult(
            attack=self.name,
            outputs={"candidates": ranked},
            metrics={"candidates": float(len(ranked))},
            meta={
                "unit": unit.name,
                "group": unit.group,
                "targets": ",".join(str(c) for c in self._targets(observation)),
            },
        )

    def evaluate(self, result: AttackResult, truth: GroundTruth) -> AttackResult:
        """PSNR of the top and best candidate, and of the mean image, vs the closest record.

        The PSNR metrics are ``nan`` when they are undefined, with a note saying why: no
        candidate was recovered, or the targets hold no record of the unit's group.
        """
        group, unit = result.meta["group"], result.meta["unit"]
        clients = [int(c) for c in result.meta["targets"].split(",") if c]
        held = [truth.train[c][group].x for c in clients if group in truth.train.get(c, {})]
        cands = result.outputs["candidates"]
        nan = float("nan")
        names = "psnr_top_db, psnr_best_db and gain_over_prior_db"
        if not held or not sum(len(x) for x in held):
            return result.with_metrics(
                {
                    "psnr_prior_db": nan,
                    "psnr_top_db": nan,
                    "psnr_best_db": nan,
                    "gain_over_prior_db": nan,
                },
                f"psnr_prior_db, {names} are nan: the target client(s) {clients} hold no "
                f"training record of group {group!r}, so there is nothing to compare with",
            )
        targets = np.concatenate(held)
        prior, _ = best_psnr(truth.mean_image[group], targets)
        metrics = {"psnr_prior_db": prior}
        notes: tuple[str, ...] = ()
        if len(cands):
            top, _ = best_psnr(cands[0], targets)
            best = max(best_psnr(c, targets)[0] for c in cands)
        else:
            top = best = nan
            notes = (
                f"{names} are nan: no candidate record was recovered, because no bias entry "
                f"of the first layer of unit {unit!r} changed in the observed vector (the "
                "target sent a zero update for this unit: it holds none of its tasks or "
                "skipped training)",
            )
        metrics.update(psnr_top_db=top, psnr_best_db=best, gain_over_prior_db=top - prior)
        return result.with_metrics(metrics, *notes)


class AnalyticInversion(_Inversion):
    """Analytic gradient inversion of one client's message in the server's inbox.

    Args:
        unit: model unit to invert (default: the first).
        client: the target client.
    """

    name: ClassVar[str] = "inversion-inbox"
    threat_model: ClassVar[ThreatModel] = ThreatModel(
        adversary=Adversary.HONEST_BUT_CURIOUS_SERVER,
        observes=frozenset({View.SERVER_INBOX}),
        summary="analytic gradient inversion of one client's message (masked under secure "
        "aggregation) (Phong 2017; Zhu 2019; Geiping 2020)",
    )

    def _vector(self, obs: Observation) -> np.ndarray:
        if obs.inbox is None:
            raise ValueError("inversion-inbox needs the server inbox (View.SERVER_INBOX)")
        if self.client not in obs.inbox:
            raise ValueError(
                f"client {self.client} sent nothing in the observed round; pick one of "
                f"{sorted(obs.inbox)} with --param client=N"
            )
        return obs.inbox[self.client]

    def _targets(self, obs: Observation) -> tuple[int, ...]:
        return (self.client,)


class AggregateInversion(_Inversion):
    """Analytic gradient inversion of the aggregate (the server's view under secure aggregation).

    Args:
        unit: model unit to invert (default: the first).
    """

    name: ClassVar[str] = "inversion-aggregate"
    threat_model: ClassVar[ThreatModel] = ThreatModel(
        adversary=Adversary.HONEST_BUT_CURIOUS_SERVER,
        observes=frozenset({View.AGGREGATE}),
        summary="analytic gradient inversion of the round's aggregate (Phong 2017; Geiping 2020)",
    )

    def __init__(self, *, unit: str | None = None) -> None:
        super().__init__(unit=unit)

    def _vector(self, obs: Observation) -> np.ndarray:
        if obs.aggregate is None:
            raise ValueError("inversion-aggregate needs the aggregate (View.AGGREGATE)")
        return obs.aggregate

    def _targets(self, obs: Observation) -> tuple[int, ...]:
        return tuple(obs.included)


def _param_slices(unit: UnitSpec) -> dict[str, slice]:
    out, offset = {}, 0
    for name, p in unit.build().named_parameters():
        out[name] = slice(offset, offset + p.numel())
        offset += p.numel()
    return out


class GradientMatching(AnalyticInversion):
    """Gradient-matching inversion of one client's one-step update (DLG / Inverting Gradients).

    Labels come from the sign of each head's bias update (iDLG: Zhao, Mopuri, Bilen 2020,
    Sec. 3); the input is optimized with Adam so that its gradient at the broadcast model has
    the highest cosine similarity with the observed update (Geiping et al. 2020, Sec. 3: the
    cosine loss is invariant to the unknown step size). Assumes one record and one local step;
    with more, it returns the input whose single gradient best matches the mixture.

    Args:
        unit: model unit to invert (default: the first).
        client: the target client.
        iterations: Adam steps.
        step: Adam learning rate.
    """

    name: ClassVar[str] = "inversion-dlg"
    threat_model: ClassVar[ThreatModel] = ThreatModel(
        adversary=Adversary.HONEST_BUT_CURIOUS_SERVER,
        observes=frozenset({View.SERVER_INBOX}),
        summary="gradient-matching inversion of one client's message, cosine loss "
        "(Zhu 2019; Geiping 2020)",
    )

    def __init__(
        self, *, unit: str | None = None, client: int = 0, iterations: int = 300, step: float = 0.1
    ) -> None:
        super().__init__(unit=unit, client=client)
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.iterations = int(iterations)
        self.step = float(step)

    def run(self, observation: Observation, *, rng: np.random.Generator) -> AttackResult:
        """Optimize a dummy record whose gradient matches the observed update."""
        import torch

        obs = observation
        if obs.broadcast is None:
            raise ValueError("inversion-dlg needs the broadcast model of the observed round")
        unit = _unit(obs, self.unit)
        vec = _to_float(self._vector(obs), obs)
        if not np.isfinite(vec).all():
            raise ValueError("the observed vector has non-finite entries; nothing to invert")
        update = torch.from_numpy(obs.unit_slice(vec, unit.name).astype(np.float32))
        slices = _param_slices(unit)
        labels = {t: int(torch.argmax(update[slices[f"heads.{t}.bias"]])) for t in unit.tasks}
        model = unit.build()
        from privfed.models import load_flat_parameters

        load_flat_parameters(model, obs.broadcast[unit.name])
        params = list(model.parameters())
        target = -update  # an SGD update is -lr * gradient
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        if unit.input_spec.kind == "token_ids":
            raise ValueError(
                f"unit {unit.name}: gradient matching optimizes a float input; this unit reads "
                "token ids, which have no gradient"
            )
        x = torch.rand(1, *unit.input_spec.shape, generator=gen).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=self.step)
        ys = {t: torch.tensor([y]) for t, y in labels.items()}
        loss_fn = torch.nn.CrossEntropyLoss()
        for _ in range(self.iterations):
            out = model(x)
            loss = sum(loss_fn(out[t], ys[t]) for t in unit.tasks)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            g = torch.cat([gr.reshape(-1) for gr in grads])
            match = 1.0 - torch.nn.functional.cosine_similarity(g, target, dim=0)
            opt.zero_grad()
            match.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
        cand = x.detach().numpy().astype(np.float64)
        return AttackResult(
            attack=self.name,
            outputs={"candidates": cand},
            metrics={"cosine_distance": float(match.detach()), "candidates": 1.0},
            meta={
                "unit": unit.name,
                "group": unit.group,
                "targets": ",".join(str(c) for c in self._targets(obs)),
            },
            notes=(f"labels inferred from head bias updates: {labels}",),
        )
