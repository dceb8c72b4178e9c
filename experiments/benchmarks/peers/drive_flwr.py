"""Drive Flower's simulation (``pip install "flwr[simulation]"``, Ray) on an exported workload.

Run by ``peers.py`` with the Flower virtual environment's Python (privfed is not installed
there): ``python drive_flwr.py DATA.npz --rounds N``; prints one JSON line. The workload is the
one privfed and pfl run (see ``drive_pfl.py``): same clients' records, same model, FedAvg,
``cohort`` clients per round, exactly ``local_steps`` SGD steps of batch ``batch_size``. Flower
simulates with its Ray backend on this machine (``--cpus`` CPUs, one per client app), without
evaluation.

What is timed: ``startup_s`` from process launch to the start of the first round (imports, Ray,
the simulation engine), each round's wall time (between the strategy's ``configure_fit``
calls), and the peak resident memory summed over the process and all its descendants (Ray's
processes), sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

T_LAUNCH = time.time()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from exported import load  # noqa: E402  (this directory)
from flwr.client import ClientApp, NumPyClient  # noqa: E402
from flwr.common import Context, ndarrays_to_parameters  # noqa: E402
from flwr.server import ServerApp, ServerAppComponents, ServerConfig  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

MARKS: list[float] = []


def _descendants_rss(pid: int) -> tuple[int, int]:
    """Resident bytes of ``pid`` and every process below it, and their count (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, count, todo = 0, 0, [pid]
    while todo:
        p = todo.pop()
        count += 1
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
        todo.extend(children.get(p, []))
    return total, count


class Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self.procs = 0
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            rss, count = _descendants_rss(os.getpid())
            self.peak = max(self.peak, rss)
            self.procs = max(self.procs, count)
            time.sleep(0.2)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    work = load(args.data)
    steps, batch, lr, cohort = work.local_steps, work.batch_size, work.lr, work.cohort
    users = sorted(work.clients)

    class Client(NumPyClient):
        def __init__(self, cid: int) -> None:
            self.cid = cid
            self.x = torch.from_numpy(work.clients[cid][0])
            self.y = torch.from_numpy(work.clients[cid][1])
            self.model = work.model()
            self.rng = np.random.default_rng(args.seed * 100_003 + cid)

        def fit(self, parameters, config):
            torch.set_num_threads(1)
            with torch.no_grad():
                for prm, v in zip(self.model.parameters(), parameters, strict=False):
                    prm.copy_(torch.from_numpy(v))
            opt = torch.optim.SGD(self.model.parameters(), lr=lr)
            ce = torch.nn.CrossEntropyLoss()
            n, done = len(self.x), 0
            while done < steps:
                order = torch.from_numpy(self.rng.permutation(n))
                for i in range(0, n, batch):
                    ix = order[i : i + batch]
                    opt.zero_grad()
                    ce(self.model(self.x[ix]), self.y[ix]).backward()
                    opt.step()
                    done += 1
                    if done == steps:
                        break
            out = [prm.detach().numpy().copy() for prm in self.model.parameters()]
            return out, n, {}

    def client_fn(context: Context):
        cid = users[int(context.node_config["partition-id"])]
        return Client(cid).to_client()

    class TimedFedAvg(FedAvg):
        def configure_fit(self, server_round, parameters, client_manager):
            MARKS.append(time.perf_counter())
            if len(MARKS) == 1:
                self.begin = time.time()
            return super().configure_fit(server_round, parameters, client_manager)

    torch.manual_seed(args.seed)
    init = [prm.detach().numpy().copy() for prm in work.model().parameters()]
    strategy = TimedFedAvg(
        fraction_fit=cohort / len(users),
        min_fit_clients=cohort,
        fraction_evaluate=0.0,
        min_evaluate_clients=0,
        min_available_clients=len(users),
        initial_parameters=ndarrays_to_parameters(init),
    )

    def server_fn(context: Context):
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=args.rounds))

    sampler = Sampler()
    sampler.start()
    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=client_fn),
        num_supernodes=len(users),
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": args.cpus, "include_dashboard": False},
        },
    )
    end = time.perf_counter()
    sampler.stop = True
    marks = [*MARKS, end]
    rounds = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    import flwr

    print(
        json.dumps(
            {
                "framework": "flwr",
                "version": getattr(flwr, "__version__", "unknown"),
                "startup_s": getattr(strategy, "begin", end) - T_LAUNCH,
                "round_s": rounds,
                "participations_per_round": cohort,
                "peak_rss": sampler.peak,
                "processes": sampler.procs,
                "note": "the last round's time runs to the simulation's end (includes shutdown)",
            }
        )
    )


if __name__ == "__main__":
    main()
