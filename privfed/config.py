"""Experiment configuration: frozen dataclasses, a TOML loader that reports every bad field.

A run is a config plus a seed. Each section is a frozen, keyword-only dataclass whose
``__post_init__`` checks its own fields and reports *all* of its problems at once; the loader
builds the sections bottom-up, prefixes each problem with the field's dotted path
(``dp.target_epsilon must be > 0, got -1``) and raises one :class:`~privfed.errors.ConfigError`
listing every problem. Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import tomli_w
import tomllib

from privfed.errors import ConfigError
from privfed.secagg.config import SecAggConfig

C = TypeVar("C")

#: Fixed-point / protocol settings live in ``privfed.secagg``; re-exported for convenience.
__all__ = [
    "AttackConfig",
    "AuditConfig",
    "ClientDPConfig",
    "DPConfig",
    "EvalConfig",
    "ExperimentConfig",
    "FederationConfig",
    "GroupConfig",
    "PartitionConfig",
    "SecAggConfig",
    "TrainConfig",
    "config_hash",
    "dump_config",
    "from_dict",
    "load_config",
    "to_dict",
    "with_overrides",
]


class _Checked:
    """Mixin: run ``_problems()`` after construction and raise them all at once."""

    def _problems(self) -> list[str]:
        return []

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise ConfigError(problems)


def _range(
    problems: list[str],
    name: str,
    value: float,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """Append a problem if ``value`` is outside the interval, naming the allowed range."""
    bad = (
        (lo is not None and (value <= lo if lo_open else value < lo))
        or (hi is not None and (value >= hi if hi_open else value > hi))
        or (isinstance(value, float) and math.isnan(value))
    )
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else repr(lo)
        hi_s = "inf" if hi is None else repr(hi)
        problems.append(f"{name} must be in {left}{lo_s}, {hi_s}{right}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class PartitionConfig(_Checked):
    """How a task group's records are split across clients (non-IID-ness)."""

    kind: str = "dirichlet"
    """Partitioner name: iid, dirichlet, shards, quantity, natural (see ``privfed list``)."""
    alpha: float = 0.3
    """Dirichlet concentration for ``dirichlet`` (label skew) and ``quantity`` (size skew);
    smaller is more skewed."""
    shards_per_client: int = 2
    """Label-sorted shards per client for ``shards``."""
    min_size: int = 10
    """Fewest records a client may hold (partitioners that can guarantee it)."""
    label: str = ""
    """Label column the skew follows; empty means the group's first task."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Further keyword parameters of the partitioner, for partitioners (third-party ones) that
    declare parameters other than the fields above."""

    def _problems(self) -> list[str]:
        p: list[str] = []
        for key in sorted(set(self.params) & {"alpha", "shards_per_client", "min_size"}):
            p.append(f"params.{key}: set {key} in the partition table itself, not in params")
        _range(p, "alpha", self.alpha, lo=0.0, lo_open=True)
        _range(p, "shards_per_client", self.shards_per_client, lo=1)
        _range(p, "min_size", self.min_size, lo=0)
        return p


_DEFAULT_HIDDEN = (64,)


def _call_problems(fn: Any, params: Mapping[str, Any], *, skip: int, what: str) -> list[str]:
    """Names in ``params`` that ``fn`` does not take (after its first ``skip`` parameters)."""
    import inspect

    sig = inspect.signature(fn)
    if any(q.kind is q.VAR_KEYWORD for q in sig.parameters.values()):
        return []
    accepted = [
        name
        for name, q in list(sig.parameters.items())[skip:]
        if q.kind in (q.KEYWORD_ONLY, q.POSITIONAL_OR_KEYWORD)
    ]
    allowed = ", ".join(accepted) or "none"
    return [
        f"{key} is not a parameter of {what}; it takes: {allowed}"
        for key in sorted(set(params) - set(accepted))
    ]


def _model_problems(g: GroupConfig) -> list[str]:
    """The group's model is registered and its parameters are ones the model accepts."""
    from privfed.errors import RegistryError
    from privfed.models import MODELS, param_problems

    try:
        MODELS.get(g.model)
    except RegistryError as exc:
        return [f"model: {exc}"]
    p = [f"model_params.{q}" for q in param_problems(g.model, g.model_params)]
    if g.model != "mlp" and tuple(g.hidden) != _DEFAULT_HIDDEN:
        p.append(
            f"hidden sets the widths of the mlp only; model {g.model!r} takes its sizes from "
            "model_params: remove hidden"
        )
    if g.model == "mlp" and "hidden" in g.model_params and tuple(g.hidden) != _DEFAULT_HIDDEN:
        p.append("hidden and model_params.hidden both set the mlp's widths: keep one")
    return p


@dataclass(frozen=True, kw_only=True)
class GroupConfig(_Checked):
    """A task group: several related tasks on the records of one data source."""

    source: str
    """Data source name (``privfed list`` shows them): digits, markov, synthetic, mnist, ..."""
    tasks: tuple[str, ...]
    """Label columns of the source to learn, one task each (e.g. identity, parity, ge5)."""
    source_params: Mapping[str, Any] = field(default_factory=dict)
    """Parameters passed to the data source (e.g. ``path`` for local loaders)."""
    architecture: Literal["per-task", "shared-trunk"] = "per-task"
    """``per-task``: one model per task; ``shared-trunk``: one trunk and one head per task."""
    hidden: tuple[int, ...] = _DEFAULT_HIDDEN
    """Hidden layer widths of the ``mlp`` model (trunk); other models take their sizes from
    ``model_params``."""
    model: str = "mlp"
    """Model of every unit of the group (``privfed list`` shows them): mlp, cnn (images),
    lstm (token sequences), or a plug-in's."""
    model_params: Mapping[str, Any] = field(default_factory=dict)
    """Parameters of the model (e.g. ``{ hidden = 128, layers = 1 }`` for lstm); unknown
    names are refused with the model's accepted ones."""
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    """How records are split across clients."""
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    """Fractions of each client's records for train, validation and test."""
    split_order: Literal["random", "ordered"] = "random"
    """``random``: each client's records are shuffled before the split; ``ordered``: they
    keep the source's order (time order for text), so the last ones are the test set."""

    def _problems(self) -> list[str]:
        p: list[str] = []
        if not self.tasks:
            p.append("tasks must name at least one label column of the source")
        if len(set(self.tasks)) != len(self.tasks):
            p.append(f"tasks must not repeat, got {list(self.tasks)}")
        if any(h < 1 for h in self.hidden):
            p.append(f"hidden widths must be >= 1, got {list(self.hidden)}")
        p.extend(_model_problems(self))
        if (
            len(self.split) != 3
            or any(f <= 0 for f in self.split)
            or not math.isclose(sum(self.split), 1.0, abs_tol=1e-9)
        ):
            p.append(f"split must be three positive fractions summing to 1, got {list(self.split)}")
        return p


@dataclass(frozen=True, kw_only=True)
class FederationConfig(_Checked):
    """Population, cohort selection and the server update."""

    #: Fields that no longer exist, with what to write instead (reported by the loader).
    _REMOVED: ClassVar[Mapping[str, str]] = {
        "mu": "was replaced by per-algorithm parameters: write [federation.algorithm_params] "
        "with mu = ... for fedprox, or lambda = ... for ditto and mocha (`privfed list` shows "
        "each algorithm's parameters)",
    }

    num_clients: int = 20
    """Number of clients in the population."""
    cohort_fraction: float = 1.0
    """Per-round client sampling rate q (Poisson sampling: each client joins with probability q)."""
    dropout: float = 0.0
    """Probability that a selected client vanishes during the aggregation protocol (simulated)."""
    groups_per_client: int = 0
    """Task skew: how many task groups each client holds; 0 means all groups."""
    algorithm: str = "fedavg"
    """Federated algorithm (``privfed list``): fedavg, local, ..."""
    aggregator: Literal["secagg", "plain"] = "secagg"
    """``secagg``: the server learns only the sum (secure aggregation); ``plain``: the sum is
    computed in the clear."""
    algorithm_params: Mapping[str, Any] = field(default_factory=dict)
    """Parameters of the chosen algorithm, checked against the ones it declares (``privfed
    list`` names them): ``mu`` for fedprox, ``lambda`` for ditto and mocha; unset ones take
    the algorithm's defaults."""
    server_optimizer: Literal["sgd", "adam"] = "sgd"
    """How the mean update moves the global model: ``sgd`` (FedAvg when server_lr = 1) or
    ``adam`` (FedAdam, Reddi et al. 2021)."""
    server_lr: float = 1.0
    """Server learning rate applied to the mean update (1.0 with sgd = FedAvg)."""
    server_beta1: float = 0.9
    """FedAdam first-moment decay."""
    server_beta2: float = 0.99
    """FedAdam second-moment decay."""
    server_tau: float = 1e-3
    """FedAdam adaptivity (added to the root of the second moment)."""

    def _problems(self) -> list[str]:
        p: list[str] = []
        _range(p, "num_clients", self.num_clients, lo=1)
        _range(p, "cohort_fraction", self.cohort_fraction, lo=0.0, hi=1.0, lo_open=True)
        _range(p, "dropout", self.dropout, lo=0.0, hi=1.0, hi_open=True)
        _range(p, "groups_per_client", self.groups_per_client, lo=0)
        _range(p, "server_lr", self.server_lr, lo=0.0, lo_open=True)
        _range(p, "server_beta1", self.server_beta1, lo=0.0, hi=1.0, hi_open=True)
        _range(p, "server_beta2", self.server_beta2, lo=0.0, hi=1.0, hi_open=True)
        _range(p, "server_tau", self.server_tau, lo=0.0, lo_open=True)
        return p


@dataclass(frozen=True, kw_only=True)
class TrainConfig(_Checked):
    """Local training on each client."""

    local_steps: int = 5
    """DP-SGD steps (Poisson batches) per task per participation."""
    batch_size: int = 16
    """Expected batch size; the Poisson sample rate is 1 / ceil(n_train / batch_size)."""
    lr: float = 0.1
    """Client SGD learning rate."""

    def _problems(self) -> list[str]:
        p: list[str] = []
        _range(p, "local_steps", self.local_steps, lo=1)
        _range(p, "batch_size", self.batch_size, lo=1)
        _range(p, "lr", self.lr, lo=0.0, lo_open=True)
        return p


@dataclass(frozen=True, kw_only=True)
class DPConfig(_Checked):
    """Record-level differential privacy (DP-SGD through Opacus)."""

    target_epsilon: float = 8.0
    """Budget per client and data source over the whole run; ``inf`` trains without DP."""
    delta: float = 1e-5
    """Delta of the (epsilon, delta) guarantee; should be below 1 / (records per client)."""
    max_grad_norm: float = 1.0
    """Per-sample gradient clipping norm."""
    accountant: Literal["rdp", "prv"] = "rdp"
    """Accountant for the epsilon reported in ``privacy.json`` (rdp: running totals, fast;
    prv: tighter, slow, computed once at the end). Calibration and budget checks use RDP."""
    noise_multiplier: float = 0.0
    """Fixed noise multiplier; 0 means calibrate to ``target_epsilon`` over the planned steps."""
    planned_participation: float = 1.0
    """Fraction of rounds a client is planned to take part in when calibrating noise
    (1.0: every round; the budget check stops a client that would exceed its budget)."""
    public_sampling: bool = False
    """Derive every client's sampling rate and noise multiplier from public parameters
    (``nominal_records``, the config) instead of its own record count; off means each client's
    record count is treated as public (stated in ``privacy.json``)."""
    nominal_records: int = 0
    """Public nominal records per client and data source for ``public_sampling``: every client
    samples at rate ``1 / ceil(nominal_records / batch_size)``."""

    @property
    def private(self) -> bool:
        """Whether records are protected by DP-SGD."""
        return not math.isinf(self.target_epsilon)

    def _problems(self) -> list[str]:
        p: list[str] = []
        _range(p, "target_epsilon", self.target_epsilon, lo=0.0, lo_open=True)
        _range(p, "delta", self.delta, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        _range(p, "max_grad_norm", self.max_grad_norm, lo=0.0, lo_open=True)
        _range(p, "noise_multiplier", self.noise_multiplier, lo=0.0)
        _range(p, "planned_participation", self.planned_participation, lo=0.0, hi=1.0, lo_open=True)
        _range(p, "nominal_records", self.nominal_records, lo=0)
        if self.public_sampling and self.nominal_records < 1:
            p.append(
                "nominal_records must be >= 1 with public_sampling = true (the public record "
                "count every client's sampling rate is derived from)"
            )
        if self.nominal_records and not self.public_sampling:
            p.append(
                "nominal_records is only used with public_sampling = true; set public_sampling "
                "or remove nominal_records"
            )
        return p


@dataclass(frozen=True, kw_only=True)
class ClientDPConfig(_Checked):
    """Client-level (user-level) DP: DP-FedAvg (McMahan et al. 2018).

    Each client's joint update (all its units) is clipped to L2 norm ``clip``; Gaussian noise
    of standard deviation ``noise_multiplier * clip`` is added to the sum, which is divided by
    the expected number of participants (fixed denominator); participation counters are not
    released. The guarantee protects everything one client contributes.
    """

    mode: Literal["off", "central", "distributed"] = "off"
    """``off``; ``central``: a trusted server adds Gaussian noise to the sum it receives;
    ``distributed``: each client adds discrete Gaussian noise before secure aggregation
    (Kairouz et al. 2021), so the server never sees an un-noised sum."""
    clip: float = 0.5
    """L2 bound of one client's joint update per round (initial bound if adaptive)."""
    target_epsilon: float = 8.0
    """Client-level epsilon over the whole run (used when noise_multiplier = 0)."""
    delta: float = 1e-3
    """Client-level delta; should be below 1 / num_clients."""
    noise_multiplier: float = 0.0
    """Fixed noise multiplier; 0 means calibrate to target_epsilon over the planned rounds."""
    adaptive: bool = False
    """Adaptive clipping (Andrew et al. 2021): track the target_quantile of update norms."""
    target_quantile: float = 0.5
    """Quantile of client update norms the adaptive clip bound tracks."""
    clip_lr: float = 0.2
    """Geometric learning rate of the adaptive clip bound."""
    count_noise_multiplier: float = 0.0
    """Noise on the count of clipped clients (adaptive only); 0 means expected cohort / 20 as
    recommended by Andrew et al. 2021, Sec. 3."""
    max_colluders: int = -1
    """Distributed mode: clients whose noise the adversary may know (colluding with the server);
    their shares and the protected client's own are not counted. -1 derives it from the
    secure-aggregation threshold t of the planned cohort: ``2t - (k + 1) - 1`` with ``k + 1``
    the closed neighbourhood (the whole cohort on the complete graph), the largest coalition
    that cannot obtain both shares of an honest client's secrets."""

    def _problems(self) -> list[str]:
        p: list[str] = []
        _range(p, "max_colluders", self.max_colluders, lo=-1)
        if self.max_colluders != -1 and self.mode != "distributed":
            p.append("max_colluders is only used with mode = 'distributed'; remove it or set mode")
        if self.mode == "distributed" and self.noise_multiplier > 0:
            p.append(
                "noise_multiplier must be 0 with mode = 'distributed': the clients' discrete "
                "Gaussian noise is calibrated to target_epsilon (set target_epsilon instead)"
            )
        _range(p, "clip", self.clip, lo=0.0, lo_open=True)
        _range(p, "target_epsilon", self.target_epsilon, lo=0.0, lo_open=True)
        _range(p, "delta", self.delta, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        _range(p, "noise_multiplier", self.noise_multiplier, lo=0.0)
        _range(
            p, "target_quantile", self.target_quantile, lo=0.0, hi=1.0, lo_open=True, hi_open=True
        )
        _range(p, "clip_lr", self.clip_lr, lo=0.0)
        _range(p, "count_noise_multiplier", self.count_noise_multiplier, lo=0.0)
        return p


@dataclass(frozen=True, kw_only=True)
class AttackConfig(_Checked):
    """One attack run against the finished run (``[[attacks]]``; ``privfed list`` shows them)."""

    name: str
    """Registered attack name (e.g. mia-loss, mia-lira, inversion-inbox)."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """The attack's keyword parameters (as for ``privfed attack NAME --param key=value``)."""
    seed: int = -1
    """Seed of the attack's randomness; -1 derives it from the run seed and the attack's place
    in the list."""
    observed_round: Literal["first", "next"] = "first"
    """Which round server- and client-side views replay (see ``privfed attack --help``)."""

    def _problems(self) -> list[str]:
        p: list[str] = []
        _range(p, "seed", self.seed, lo=-1)
        return p


@dataclass(frozen=True, kw_only=True)
class AuditConfig(_Checked):
    """Empirical privacy audit with canaries in one client's data, in one run.

    Steinke, Nasr, Jagielski 2023 ("Privacy Auditing with One (1) Training Run") with
    mislabeled canaries (Jagielski et al. 2020): ``canaries`` copies of held-out records with a
    wrong label are made, each put into the audited client's training data with probability
    1/2; after the run the auditor guesses membership of the canaries from their loss under the
    client's model and turns the correct guesses into an epsilon lower bound.
    """

    canaries: int = 0
    """Canaries to make (0: no audit). They change the audited client's data: audit runs are
    separate from the runs whose accuracy you report."""
    guesses: int = 0
    """Guesses on each side (k "in", k "out"); 0 means canaries // 4."""
    client: int = 0
    """The audited client (it must hold the audited group)."""
    group: str = ""
    """The audited task group; empty means the first group."""
    confidence: float = 0.95
    """Confidence level of the lower bound."""

    def _problems(self) -> list[str]:
        p: list[str] = []
        _range(p, "canaries", self.canaries, lo=0)
        _range(p, "guesses", self.guesses, lo=0)
        _range(p, "client", self.client, lo=0)
        _range(p, "confidence", self.confidence, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        if self.canaries and 2 * (self.guesses or self.canaries // 4) > self.canaries:
            p.append(
                f"guesses must be at most canaries / 2 ({self.canaries // 2}), got {self.guesses}"
            )
        if self.canaries and not (self.guesses or self.canaries // 4):
            p.append("canaries must be at least 4 (or set guesses) for the audit to guess")
        return p


@dataclass(frozen=True, kw_only=True)
class EvalConfig(_Checked):
    """When and how clients are evaluated."""

    every: int = 5
    """Evaluate every this many rounds (and always after the last round)."""
    worst_fraction: float = 0.1
    """The "worst" metric is the mean accuracy of this fraction of worst clients."""

    def _problems(self) -> list[str]:
        p: list[str] = []
        _range(p, "every", self.every, lo=1)
        _range(p, "worst_fraction", self.worst_fraction, lo=0.0, hi=1.0, lo_open=True)
        return p


def _default_groups() -> dict[str, GroupConfig]:
    return {
        "image": GroupConfig(source="digits", tasks=("identity", "parity", "ge5")),
    }


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig(_Checked):
    """One federated experiment: data, federation, training, privacy, aggregation."""

    name: str = "experiment"
    """A short name used for the run directory."""
    seed: int = 0
    """Root seed: the same config and seed give the same numbers on the same machine."""
    rounds: int = 30
    """Federated rounds."""
    groups: Mapping[str, GroupConfig] = field(default_factory=_default_groups)
    """Task groups by name (``[groups.image]``, ``[groups.text]``, ...)."""
    federation: FederationConfig = field(default_factory=FederationConfig)
    """Population and server."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Local training."""
    dp: DPConfig = field(default_factory=DPConfig)
    """Record-level DP."""
    client_dp: ClientDPConfig = field(default_factory=ClientDPConfig)
    """Client-level DP (independent of, and combinable with, record-level ``dp``)."""
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
    """Secure aggregation (used when ``federation.aggregator = "secagg"``)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation."""
    threads: int = 1
    """Torch intra-op threads per process (1 is fastest for the small bundled models)."""
    audit: AuditConfig = field(default_factory=AuditConfig)
    """Empirical privacy audit (off unless ``audit.canaries > 0``)."""
    attacks: tuple[AttackConfig, ...] = ()
    """Attacks run against the finished run; their metrics go to ``attacks.json`` and, in a
    sweep, to ``results.csv`` (``[[attacks]]`` tables)."""

    def _problems(self) -> list[str]:
        p: list[str] = []
        if not self.name or any(c in self.name for c in "/\\ "):
            p.append(f"name must be a non-empty word without slashes or spaces, got {self.name!r}")
        _range(p, "seed", self.seed, lo=0)
        _range(p, "rounds", self.rounds, lo=1)
        _range(p, "threads", self.threads, lo=1)
        if not self.groups:
            p.append("groups must define at least one task group")
        tasks: dict[str, str] = {}
        for gname, g in self.groups.items():
            for t in g.tasks:
                full = f"{gname}.{t}"
                tasks[full] = gname
        from privfed.algorithms import ALGORITHMS
        from privfed.data.partition import PARTITIONERS
        from privfed.errors import RegistryError

        try:
            alg = ALGORITHMS.get(self.federation.algorithm)
        except RegistryError as exc:
            p.append(f"federation.algorithm: {exc}")
        else:
            from privfed.algorithms import parse_params

            fed = self.federation
            try:
                parse_params(alg.Params, fed.algorithm_params, algorithm=fed.algorithm)
            except ConfigError as exc:
                p.extend(f"federation.algorithm_params.{q}" for q in exc.problems)
            if alg.needs_individual_updates and self.federation.aggregator == "secagg":
                p.append(
                    f"federation.algorithm = {self.federation.algorithm!r} needs each client's "
                    "model, which secure aggregation hides from the server by design; set "
                    'federation.aggregator = "plain" to run it (the server then sees every '
                    "individual model) or choose an algorithm that needs only sums"
                )
            if alg.needs_individual_updates and self.client_dp.mode != "off":
                p.append(
                    f"client_dp.mode must be 'off' with federation.algorithm = "
                    f"{self.federation.algorithm!r}: client-level DP protects a noisy sum, and "
                    "this algorithm releases individual models"
                )
        first_on_source: dict[str, str] = {}
        for gname, g in self.groups.items():
            try:
                partitioner = PARTITIONERS.get(g.partition.kind)
            except RegistryError as exc:
                p.append(f"groups.{gname}.partition.kind: {exc}")
            else:
                p.extend(
                    f"groups.{gname}.partition.params.{q}"
                    for q in _call_problems(
                        partitioner,
                        g.partition.params,
                        skip=4,
                        what=f"partitioner {g.partition.kind!r}",
                    )
                )
            first = first_on_source.setdefault(g.source, gname)
            if first != gname:
                f = self.groups[first]
                differ = [
                    name
                    for name, mine, theirs in (
                        ("source_params", dict(g.source_params), dict(f.source_params)),
                        ("partition", g.partition, f.partition),
                        ("split", tuple(g.split), tuple(f.split)),
                        ("split_order", g.split_order, f.split_order),
                    )
                    if mine != theirs
                ]
                if differ:
                    p.append(
                        f"groups.{gname}: shares source {g.source!r} with groups.{first} but its "
                        f"{', '.join(differ)} differ; a source's records belong to one client "
                        "whatever the group (one partition per source, one privacy ledger per "
                        "client and source): make them equal or use another source"
                    )
        if self.attacks:
            from privfed.attack_api import ATTACKS

            for i, a in enumerate(self.attacks):
                try:
                    ATTACKS.get(a.name)
                except RegistryError as exc:
                    p.append(f"attacks[{i}].name: {exc}")
        if self.audit.canaries:
            if self.audit.group and self.audit.group not in self.groups:
                p.append(
                    f"audit.group must be one of {', '.join(self.groups)}, got {self.audit.group!r}"
                )
            if self.audit.client >= self.federation.num_clients:
                p.append(
                    f"audit.client must be < federation.num_clients "
                    f"({self.federation.num_clients}), got {self.audit.client}"
                )
        if self.client_dp.mode == "distributed":
            if self.federation.aggregator != "secagg":
                p.append(
                    "client_dp.mode = 'distributed' needs federation.aggregator = 'secagg': the "
                    "clients' noise protects only a sum the server cannot see apart"
                )
            if self.client_dp.adaptive:
                p.append(
                    "client_dp.adaptive must be false with mode = 'distributed' (adaptive "
                    "clipping is implemented for the central mode only)"
                )
        if self.client_dp.mode != "off":
            from privfed.privacy.planning import check_delta

            delta_check = check_delta(
                delta=self.client_dp.delta,
                n=self.federation.num_clients,
                field_name="client_dp.delta",
                unit="clients of the population (federation.num_clients)",
            )
            if delta_check.refuse:
                p.append(delta_check.message)
        if self.client_dp.mode == "central":
            from privfed.privacy.client_dp import central_budget_problems

            p.extend(
                central_budget_problems(
                    target_epsilon=self.client_dp.target_epsilon,
                    delta=self.client_dp.delta,
                    noise_multiplier=self.client_dp.noise_multiplier,
                    sample_rate=self.federation.cohort_fraction,
                    rounds=self.rounds,
                )
            )
        if self.client_dp.mode != "off" and self.federation.algorithm == "local":
            p.append(
                "client_dp.mode must be 'off' with federation.algorithm = 'local' (nothing is "
                "shared, so there is nothing to protect at the client level)"
            )
        if self.federation.groups_per_client > len(self.groups):
            p.append(
                f"federation.groups_per_client must be <= the number of groups "
                f"({len(self.groups)}), got {self.federation.groups_per_client}"
            )
        if self.federation.aggregator == "secagg":
            from privfed.secagg.config import check_no_overflow, cohort_problems

            try:
                check_no_overflow(self.secagg, num_clients=self.federation.num_clients)
            except ConfigError as exc:
                p.extend(f"secagg.{q}" if not q.startswith("secagg.") else q for q in exc.problems)
            p.extend(
                cohort_problems(
                    self.secagg,
                    num_clients=self.federation.num_clients,
                    expected_cohort=self.federation.num_clients * self.federation.cohort_fraction,
                )
            )
        return p


# --------------------------------------------------------------------------------------------
# Generic dict <-> dataclass conversion with path-prefixed errors


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    """Convert a TOML value to ``tp``; append problems (with ``path``) instead of raising."""
    origin = get_origin(tp)
    args = get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            problems.append(f"{path} must be a table, got {type(value).__name__}")
            return None
        return _build(tp, value, path, problems)
    if origin is Literal:
        if value not in args:
            problems.append(
                f"{path} must be one of {', '.join(repr(a) for a in args)}, got {value!r}"
            )
        return value
    if origin in (Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if value is None and len(non_none) < len(args):
            return None
        return _convert(value, non_none[0], path, problems)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            problems.append(f"{path} must be an array, got {value!r}")
            return None
        item_tp = args[0] if args else Any
        return tuple(_convert(v, item_tp, f"{path}[{i}]", problems) for i, v in enumerate(value))
    if origin in (Mapping, dict) or tp in (dict, Mapping) or origin is typing.Mapping:
        if not isinstance(value, Mapping):
            problems.append(f"{path} must be a table, got {value!r}")
            return None
        val_tp = args[1] if len(args) == 2 else Any
        if val_tp is Any:
            return dict(value)
        return {k: _convert(v, val_tp, f"{path}.{k}", problems) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{path} must be true or false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", "infinity"):
            return math.inf
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{path} must be a number, got {value!r}")
            return value
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{path} must be an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{path} must be a string, got {value!r}")
        return value
    return value


def _build(cls: type[C], data: Mapping[str, Any], path: str, problems: list[str]) -> C | None:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    prefix = f"{path}." if path else ""
    kwargs: dict[str, Any] = {}
    failed: set[str] = set()
    n_before = len(problems)
    removed: Mapping[str, str] = getattr(cls, "_REMOVED", {})
    for key, value in data.items():
        if key in removed:
            problems.append(f"{prefix}{key} {removed[key]}")
            continue
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(
                f"{prefix}{key} is not a known field{hint}; known: {', '.join(sorted(fields))}"
            )
            continue
        n_field = len(problems)
        kwargs[key] = _convert(value, hints[key], f"{prefix}{key}", problems)
        if len(problems) > n_field:
            failed.add(key)
            del kwargs[key]
    for name, f in fields.items():
        if (
            name not in kwargs
            and name not in failed
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ):
            problems.append(f"{prefix}{name} is required ({_type_name(hints[name])})")
            failed.add(name)
    complete = len(problems) == n_before
    if not complete and any(
        fields[n].default is dataclasses.MISSING
        and fields[n].default_factory is dataclasses.MISSING
        for n in failed
    ):
        return None
    # Fields that failed fall back to their defaults so this level's own checks still run and
    # every problem is reported at once; problems about the failed fields themselves are not
    # repeated.
    try:
        obj = cls(**kwargs)
    except ConfigError as exc:
        for q in exc.problems:
            if q.split(" ", 1)[0].split(".", 1)[0] in failed:
                continue
            problems.append(q if q.startswith(prefix) and prefix else f"{prefix}{q}")
        return None
    return obj if complete else None


def from_dict(data: Mapping[str, Any], *, source: str | None = None) -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a TOML-shaped mapping.

    Raises:
        ConfigError: listing every invalid, missing or unknown field with its dotted path.
    """
    problems: list[str] = []
    cfg = _build(ExperimentConfig, data, "", problems)
    if problems or cfg is None:
        raise ConfigError(problems, source=source)
    return cfg


MAX_CONFIG_BYTES = 16 * 2**20
"""Largest experiment file :func:`load_config` reads."""


def load_config(path: str | Path) -> ExperimentConfig:
    """Load and validate a TOML experiment file."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror}", source=str(path)
        ) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"the file is larger than {MAX_CONFIG_BYTES} bytes; an experiment file is a few "
            "kilobytes: check the path",
            source=str(path),
        )
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc}", source=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(path)) from None
    except RecursionError:
        raise ConfigError(
            "arrays or tables are nested too deeply to parse; an experiment file nests a few "
            "levels",
            source=str(path),
        ) from None
    return from_dict(data, source=str(path))


def bundled_configs() -> dict[str, Path]:
    """The configs that ship with privfed, by name (``quickstart``)."""
    from importlib import resources

    root = resources.files("privfed") / "configs"
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in root.iterdir()
        if entry.name.endswith(".toml")
    }


def resolve_config(ref: str | None, *, base: Path | None = None) -> Path:
    """The config file ``ref`` names: a bundled config's name (``quickstart``) or a path.

    A bare name without a ``.toml`` suffix or a directory part is a bundled config when privfed
    ships one of that name (as a sweep's ``base = "quickstart"``); anything else is a path,
    relative to ``base`` when given. None means the quickstart.
    """
    bundled = bundled_configs()
    if ref is None:
        return bundled["quickstart"]
    if ref in bundled and not Path(ref).suffix and Path(ref).name == ref:
        return bundled[ref]
    return (base / ref) if base is not None else Path(ref)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A TOML-ready mapping of a config (None values dropped, tuples as lists)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {
                f.name: conv(getattr(v, f.name))
                for f in dataclasses.fields(v)
                if getattr(v, f.name) is not None
            }
        if isinstance(v, Mapping):
            return {str(k): conv(x) for k, x in v.items() if x is not None}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    out = conv(cfg)
    assert isinstance(out, dict)
    return out


def dump_config(cfg: ExperimentConfig) -> str:
    """The resolved config as TOML text (every field, defaults included)."""
    return tomli_w.dumps(to_dict(cfg))


#: Fields (dotted paths) added after the hash was first defined, left out of the hash while
#: they hold their default, so adding them did not change the hash (and the run-directory
#: names) of every existing config.
_HASHED_ONLY_WHEN_SET: dict[str, Any] = {
    "attacks": [],
    "audit": {"canaries": 0, "guesses": 0, "client": 0, "group": "", "confidence": 0.95},
    "dp.public_sampling": False,
    "dp.nominal_records": 0,
    "client_dp.max_colluders": -1,
    # secure-aggregation safety settings (the sum they produce is the same)
    "secagg.security": "malicious",
    "secagg.min_clients": 4,
    "secagg.min_neighbours": None,
    "secagg.allow_insecure_threshold": False,
    "secagg.expected_dropout": 0.1,
    "secagg.max_failure_probability": 0.01,
}


#: Task-group fields likewise added later (models, split order), hashed only when set.
_GROUP_HASHED_ONLY_WHEN_SET: dict[str, Any] = {
    "model": "mlp",
    "model_params": {},
    "split_order": "random",
}


def config_hash(cfg: ExperimentConfig) -> str:
    """A short stable hash of the resolved config (sha256 of canonical JSON, 16 hex digits)."""
    data = to_dict(cfg)
    for dotted, default in _HASHED_ONLY_WHEN_SET.items():
        *parents, key = dotted.split(".")
        node: Any = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(key) == default:
            node.pop(key, None)
    for group in data.get("groups", {}).values():
        for key, default in _GROUP_HASHED_ONLY_WHEN_SET.items():
            if group.get(key) == default:
                group.pop(key, None)
        partition = group.get("partition")
        if isinstance(partition, dict) and partition.get("params") == {}:
            partition.pop("params")  # added later: hashed only when set
    canon = json.dumps(data, sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def with_overrides(cfg: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """A copy of ``cfg`` with dotted-path fields replaced (``{"dp.target_epsilon": 4.0}``).

    The result is validated like a loaded file; unknown paths are reported as unknown fields.
    """
    data = to_dict(cfg)
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[parts[-1]] = value
    return from_dict(data, source="overrides")
