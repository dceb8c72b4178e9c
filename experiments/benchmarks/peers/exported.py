"""An exported workload as the peers' drivers read it (numpy and torch only, no privfed).

``peers.py`` writes ``WORKLOAD.npz`` from privfed's federation; ``drive_pfl.py`` and
``drive_flwr.py`` (run with the peers' own Pythons, from this directory) read it here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Workload:
    """Every client's training records and the training settings shared by all frameworks.

    Attributes:
        clients: client id -> (inputs flattened to float32 rows, int64 labels); clients without
            training records are left out.
        hidden: hidden widths of the MLP (empty: a linear model).
        classes: number of classes.
        local_steps: SGD steps per participation.
        batch_size: records per step.
        lr: local learning rate.
        cohort: clients per round.
    """

    clients: dict[int, tuple[np.ndarray, np.ndarray]]
    hidden: list[int]
    classes: int
    local_steps: int
    batch_size: int
    lr: float
    cohort: int

    @property
    def in_features(self) -> int:
        """Width of an input row."""
        return int(next(iter(self.clients.values()))[0].shape[1])

    def model(self) -> torch.nn.Module:
        """The workload's model (privfed's ``mlp`` with one head): Linear/ReLU trunk, head."""
        layers: list[torch.nn.Module] = [torch.nn.Flatten()]
        width = self.in_features
        for h in self.hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
            width = h
        layers.append(torch.nn.Linear(width, self.classes))
        return torch.nn.Sequential(*layers)


def load(path: str) -> Workload:
    """Read a workload written by ``peers.py``."""
    d = np.load(path)
    x = d["x"].astype(np.float32).reshape(len(d["x"]), -1)
    y, offsets = d["y"].astype(np.int64), d["offsets"]
    return Workload(
        clients={
            c: (x[offsets[c] : offsets[c + 1]], y[offsets[c] : offsets[c + 1]])
            for c in range(len(offsets) - 1)
            if offsets[c + 1] > offsets[c]
        },
        hidden=[int(h) for h in d["hidden"]],
        classes=int(d["classes"]),
        local_steps=int(d["local_steps"]),
        batch_size=int(d["batch_size"]),
        lr=float(d["lr"]),
        cohort=int(d["cohort"]),
    )


def peak_rss() -> int:
    """This process's peak resident set size in bytes (``VmHWM``)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0
