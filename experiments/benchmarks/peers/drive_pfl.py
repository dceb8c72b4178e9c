"""Drive pfl-research (``pip install pfl``) on an exported privfed workload; print one JSON line.

Run by ``peers.py`` with the pfl virtual environment's Python (privfed is not installed
there): ``python drive_pfl.py DATA.npz --rounds N --warmup W``. The workload is the one privfed
runs: the same clients' training records (exported from privfed's federation), the same model
(an MLP with the same widths, or a linear model), FedAvg with server learning rate 1, a cohort
of ``cohort`` clients drawn at random each round, and exactly ``local_steps`` SGD steps of batch
``batch_size`` per participation (the records are reshuffled at each pass, as privfed does).
pfl runs in one process (its default simulation), without evaluation.

What is timed: ``startup_s`` from process launch to the start of the first round (imports, data,
model), each round's wall time and CPU time (pfl's ``after_central_iteration`` callback; pfl
simulates in this one process, so its CPU time is the run's), and the peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import time

T_LAUNCH = time.time()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from exported import load, peak_rss  # noqa: E402  (this directory)
from pfl.aggregate.simulate import SimulatedBackend  # noqa: E402
from pfl.aggregate.weighting import WeightByUser  # noqa: E402
from pfl.algorithm import FederatedAveraging, NNAlgorithmParams  # noqa: E402
from pfl.callback.base import TrainingProcessCallback  # noqa: E402
from pfl.data.dataset import Dataset  # noqa: E402
from pfl.data.federated_dataset import FederatedDataset  # noqa: E402
from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams  # noqa: E402
from pfl.metrics import Metrics, Weighted  # noqa: E402
from pfl.model.pytorch import PyTorchModel  # noqa: E402


class Net(torch.nn.Module):
    """The workload's model with the loss and metrics pfl asks a model for."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.ce = torch.nn.CrossEntropyLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss(self, x: torch.Tensor, y: torch.Tensor, eval: bool = False) -> torch.Tensor:  # noqa: A002
        self.eval() if eval else self.train()
        return self.ce(self(x), y.long())

    def metrics(self, x: torch.Tensor, y: torch.Tensor, eval: bool = False):  # noqa: A002
        loss = self.loss(x, y, eval=eval).item()
        return {"loss": Weighted(loss * len(x), len(x))}


class StepsDataset(Dataset):
    """A user's records, iterated as ``steps`` shuffled batches (reshuffled at every pass), so
    that pfl's ``local_num_steps`` takes exactly that many steps (as privfed's ``local_steps``
    does) whatever the user's record count."""

    def __init__(self, x: np.ndarray, y: np.ndarray, user_id: str, seed: int, steps: int) -> None:
        super().__init__((x, y), user_id=user_id)
        self._rng = np.random.default_rng(seed)
        self._steps = steps

    def iter(self, batch_size):  # noqa: A003
        x, y = self.raw_data
        n = len(x)
        if batch_size is None:
            yield [x, y]
            return
        done = 0
        while True:
            order = self._rng.permutation(n)
            for i in range(0, n, batch_size):
                ix = order[i : i + batch_size]
                yield [x[ix], y[ix]]
                done += 1
                if done == self._steps:
                    return


class Timer(TrainingProcessCallback):
    """Wall time at the start and after every central iteration."""

    def __init__(self) -> None:
        self.marks: list[float] = []
        self.cpu: list[float] = []

    def on_train_begin(self, *, model):
        self.marks.append(time.perf_counter())
        self.cpu.append(time.process_time())
        self.begin = time.time()
        return Metrics()

    def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):
        self.marks.append(time.perf_counter())
        self.cpu.append(time.process_time())
        return False, Metrics()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    work = load(args.data)
    steps, batch, lr, cohort = work.local_steps, work.batch_size, work.lr, work.cohort
    users = {str(c): xy for c, xy in work.clients.items()}
    ids = sorted(users)
    seeds = {u: i for i, u in enumerate(ids)}

    def make(uid: str) -> StepsDataset:
        ux, uy = users[uid]
        return StepsDataset(ux, uy, uid, seed=args.seed * 100_003 + seeds[uid], steps=steps)

    rng = np.random.default_rng(args.seed)
    dataset = FederatedDataset(make, lambda: ids[int(rng.integers(len(ids)))])
    net = Net(work.model())
    model = PyTorchModel(
        model=net,
        local_optimizer_create=torch.optim.SGD,
        central_optimizer=torch.optim.SGD(net.parameters(), 1.0),
    )
    backend = SimulatedBackend(
        training_data=dataset, val_data=None, postprocessors=[WeightByUser()]
    )
    timer = Timer()
    FederatedAveraging().run(
        algorithm_params=NNAlgorithmParams(
            central_num_iterations=args.rounds,
            evaluation_frequency=10**9,
            train_cohort_size=cohort,
            val_cohort_size=None,
        ),
        backend=backend,
        model=model,
        model_train_params=NNTrainHyperParams(
            local_learning_rate=lr,
            local_num_epochs=None,
            local_batch_size=batch,
            local_num_steps=steps,
        ),
        model_eval_params=NNEvalHyperParams(local_batch_size=None),
        callbacks=[timer],
    )
    rounds = [b - a for a, b in zip(timer.marks, timer.marks[1:], strict=False)]
    cpu = [b - a for a, b in zip(timer.cpu, timer.cpu[1:], strict=False)]
    import pfl

    print(
        json.dumps(
            {
                "framework": "pfl",
                "version": getattr(pfl, "__version__", "unknown"),
                "startup_s": timer.begin - T_LAUNCH,
                "round_s": rounds,
                "cpu_s": cpu,
                "participations_per_round": cohort,
                "peak_rss": peak_rss(),
                "processes": 1,
            }
        )
    )


if __name__ == "__main__":
    main()
