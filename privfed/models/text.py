"""A token-sequence model for next-token tasks: embedding, stacked LSTM, one head per task.

The shape follows McMahan et al. 2017 (Sec. 3, Shakespeare): each character is embedded in 8
dimensions, two LSTM layers of 256 units read the sequence, and the last step's output feeds a
softmax per task (LEAF's reference model uses the same). Two LSTM implementations give the same
function and the same per-sample gradients:

* ``cell = "fused"`` (default): :class:`FusedLSTMLayer`. Opacus computes per-sample gradients
  of a weight from its layer's input and the gradient at its output; a recurrent weight is used
  once per time step, so Opacus's own ``DPLSTM`` hooks every step and accumulates ``T``
  per-sample outer products of size ``batch x 4H x H``. Here each weight is applied to the whole
  sequence at once (one ``nn.Linear`` call on ``[N, T, features]``), so Opacus's Linear grad
  sampler sums over time in one batched product: about 8x faster for 2 x 256 units, with the
  same per-sample gradients (tests compare them with a per-example reference).
* ``cell = "opacus"``: ``opacus.layers.DPLSTM``, the reference implementation.

How :class:`FusedLSTMLayer` gets exact gradients: the hidden states are first computed without
autograd (they are the inputs of the recurrent weight). With autograd on, the recurrence is then
run with a *detached* copy of the recurrent weight (so gradients flow back through time), and
the recurrent weight enters once as ``hh(H_prev) - hh(H_prev).detach()``: zero in value, with
gradient ``sum_t dL/dgates_t h_{t-1}^T`` per example, exactly the weight's true gradient.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from opacus.layers import DPLSTM
from torch import nn

from privfed.data.inputs import InputSpec
from privfed.models.base import MultiHead


class FusedLSTMLayer(nn.Module):
    """One batch-first LSTM layer whose weights each act once on the whole sequence.

    Gates are ordered (input, forget, cell, output) as in ``nn.LSTM``; parameters are
    ``ih`` (input projection with the bias) and ``hh`` (recurrent projection, no bias).

    Args:
        input_size: features per time step.
        hidden_size: units.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = int(hidden_size)
        self.ih = nn.Linear(input_size, 4 * hidden_size)
        self.hh = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.LSTM``'s initialization: every parameter U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-bound, bound)

    @staticmethod
    def _step(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def _run(self, gx: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the recurrence; return every step's output and every step's previous state."""
        n = gx.shape[0]
        h = gx.new_zeros(n, self.hidden_size)
        c = gx.new_zeros(n, self.hidden_size)
        outs: list[torch.Tensor] = []
        prev: list[torch.Tensor] = []
        for g in gx.unbind(1):
            prev.append(h)
            h, c = self._step(g + F.linear(h, w), c)
            outs.append(h)
        return torch.stack(outs, 1), torch.stack(prev, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``[N, T, hidden]`` for inputs ``[N, T, input_size]``."""
        gx = self.ih(x)
        w = self.hh.weight.detach()
        if not torch.is_grad_enabled():
            return self._run(gx, w)[0]
        with torch.no_grad():
            _, h_prev = self._run(gx.detach(), w)
        recurrent = self.hh(h_prev)
        # zero in value; carries dL/dgates_t into hh with h_{t-1} as its input
        out, _ = self._run(gx + (recurrent - recurrent.detach()), w)
        return out


EVAL_CHUNK = 512
"""Records per forward pass when evaluating without autograd."""


class _TokenTrunk(nn.Module):
    """Embedding, stacked LSTM, output of the last time step."""

    def __init__(self, vocab: int, embedding: int, hidden: int, layers: int, cell: str) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embedding)
        self.lstm: nn.Module
        if cell == "fused":
            self.lstm = nn.Sequential(
                *[FusedLSTMLayer(embedding if i == 0 else hidden, hidden) for i in range(layers)]
            )
        else:
            self.lstm = DPLSTM(embedding, hidden, num_layers=layers, batch_first=True)
        self.fused = cell == "fused"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``[N, hidden]`` of token ids ``[N, T]``."""
        if not torch.is_grad_enabled() and x.shape[0] > EVAL_CHUNK:
            # evaluation of a large split: bounded memory (the gates of a whole test set of a
            # long role would take gigabytes)
            return torch.cat([self(part) for part in x.split(EVAL_CHUNK)])
        z = self.embedding(x.long())
        out = self.lstm(z) if self.fused else self.lstm(z)[0]
        return out[:, -1]


def lstm_model(
    inputs: InputSpec,
    heads: Mapping[str, int],
    *,
    embedding: int = 8,
    hidden: int = 256,
    layers: int = 2,
    cell: str = "fused",
) -> MultiHead:
    """Embedding + stacked LSTM on token ids (next-character tasks; per-sample gradients).

    Defaults are McMahan et al.'s Shakespeare model (8-dim embedding, 2 x 256 units).

    Args:
        inputs: a token-id input spec (e.g. LEAF Shakespeare, 80 characters).
        heads: task -> number of classes.
        embedding: embedding dimension.
        hidden: LSTM units per layer.
        layers: stacked LSTM layers.
        cell: ``"fused"`` (fast, exact per-sample gradients) or ``"opacus"`` (Opacus DPLSTM).
    """
    if inputs.kind != "token_ids" or len(inputs.shape) != 1:
        raise ValueError(
            f"the lstm needs token-id sequences [length]; this source gives "
            f'{inputs.describe()}: use model = "mlp" (or "cnn" for images)'
        )
    for name, value in (("embedding", embedding), ("hidden", hidden), ("layers", layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if cell not in ("fused", "opacus"):
        raise ValueError(f"cell must be 'fused' or 'opacus', got {cell!r}")
    trunk = _TokenTrunk(inputs.vocab, embedding, hidden, layers, cell)
    return MultiHead(trunk, hidden, heads)
