"""Built-in models: mlp (token one-hot inside), cnn (sized from the image), lstm (fused, exact)."""

import pytest
import torch
import torch.nn.functional as F
from opacus import GradSampleModule
from torch import nn

from privfed.data.inputs import InputSpec
from privfed.models import MODELS, MultiHeadMLP, build_model, num_parameters
from privfed.models.check import model_problems
from privfed.models.text import FusedLSTMLayer


def test_builtins_are_registered_with_descriptions() -> None:
    assert {"mlp", "cnn", "lstm"} <= set(MODELS.names())
    assert all(e.description for e in MODELS.entries())


def test_mlp_one_hot_encodes_token_ids_itself() -> None:
    spec = InputSpec(shape=(3,), kind="token_ids", vocab=5)
    model = build_model("mlp", spec, {"next": 5}, {"hidden": (4,)})
    assert isinstance(model, MultiHeadMLP)
    ref = MultiHeadMLP(15, (4,), {"next": 5})  # the same MLP on explicit one-hot floats
    ref.load_state_dict(model.state_dict())
    ids = torch.tensor([[0, 4, 2], [1, 1, 3]])
    onehot = F.one_hot(ids, 5).float().reshape(2, -1)
    assert torch.equal(model(ids)["next"], ref(onehot)["next"])
    # parameter names are those of the float MLP (FedPer finds heads.*, attacks the trunk)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in ref.named_parameters()]


@pytest.mark.parametrize(
    ("shape", "convs", "features"),
    [
        ((1, 8, 8), [16, 32], 32 * 4 * 4),
        ((1, 28, 28), [32, 64], 64 * 4 * 4),
        ((3, 32, 32), [32, 64, 64], 64 * 4 * 4),
    ],
)
def test_cnn_adapts_to_the_image_size(
    shape: tuple[int, int, int], convs: list[int], features: int
) -> None:
    spec = InputSpec(shape=shape, kind="image")
    model = build_model("cnn", spec, {"identity": 10, "parity": 2}, {})
    layers = list(model.modules())
    assert [m.out_channels for m in layers if isinstance(m, nn.Conv2d)] == convs
    assert any(isinstance(m, nn.GroupNorm) for m in layers)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in layers)
    fc = [m for m in layers if isinstance(m, nn.Linear)][0]
    assert fc.in_features == features
    out = model(torch.rand(3, *shape))
    assert out["identity"].shape == (3, 10) and out["parity"].shape == (3, 2)
    assert model_problems(model, spec, {"identity": 10, "parity": 2}) == []


def test_cnn_and_lstm_refuse_the_wrong_inputs_with_the_fix() -> None:
    from privfed.errors import ConfigError

    with pytest.raises(ConfigError, match='cnn needs image inputs.*use model = "mlp"'):
        build_model("cnn", InputSpec(shape=(80,), kind="token_ids", vocab=81), {"next": 81}, {})
    with pytest.raises(ConfigError, match='lstm needs token-id sequences.*"cnn" for images'):
        build_model("lstm", InputSpec(shape=(1, 8, 8), kind="image"), {"identity": 10}, {})
    with pytest.raises(ConfigError, match="groups .3. must divide"):
        build_model("cnn", InputSpec(shape=(1, 8, 8), kind="image"), {"a": 2}, {"groups": 3})
    with pytest.raises(ConfigError, match="accepted: embedding, hidden, layers, cell"):
        build_model(
            "lstm", InputSpec(shape=(8,), kind="token_ids", vocab=5), {"a": 2}, {"units": 3}
        )


def _reference(layers: list[FusedLSTMLayer], z: torch.Tensor) -> torch.Tensor:
    """The textbook LSTM recurrence with the same weights, one step at a time."""
    for layer in layers:
        h = z.new_zeros(z.shape[0], layer.hidden_size)
        c = torch.zeros_like(h)
        outs = []
        for t in range(z.shape[1]):
            g = layer.ih(z[:, t]) + layer.hh(h)
            i, f, gg, o = g.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        z = torch.stack(outs, 1)
    return z


@pytest.mark.filterwarnings("ignore:Full backward hook")
def test_fused_lstm_per_sample_gradients_equal_a_per_example_reference() -> None:
    torch.manual_seed(0)
    spec = InputSpec(shape=(12,), kind="token_ids", vocab=7)
    heads = {"next": 7}
    model = build_model("lstm", spec, heads, {"embedding": 3, "hidden": 5, "layers": 2})
    x = torch.randint(0, 7, (4, 12))
    y = torch.randint(0, 7, (4,))
    gsm = GradSampleModule(model, loss_reduction="sum")
    F.cross_entropy(gsm(x)["next"], y, reduction="sum").backward()
    per_sample = {n: p.grad_sample.detach().clone() for n, p in model.named_parameters()}
    gsm.remove_hooks()
    layers = list(model.trunk.lstm)
    for b in range(4):
        model.zero_grad(set_to_none=True)
        z = _reference(layers, model.trunk.embedding(x[b : b + 1]))[:, -1]
        F.cross_entropy(model.heads["next"](z), y[b : b + 1], reduction="sum").backward()
        for n, p in model.named_parameters():
            assert torch.allclose(per_sample[n][b], p.grad, atol=1e-6, rtol=1e-4), n
    with torch.no_grad():  # the no-autograd path (evaluation) computes the same function
        ref = model.heads["next"](_reference(layers, model.trunk.embedding(x))[:, -1])
        assert torch.allclose(model(x)["next"], ref, atol=1e-6)


def test_fused_lstm_is_the_function_of_opacus_dplstm() -> None:
    torch.manual_seed(1)
    spec = InputSpec(shape=(9,), kind="token_ids", vocab=6)
    fused = build_model("lstm", spec, {"next": 6}, {"embedding": 3, "hidden": 4, "layers": 2})
    opacus = build_model(
        "lstm", spec, {"next": 6}, {"embedding": 3, "hidden": 4, "layers": 2, "cell": "opacus"}
    )
    state = opacus.state_dict()
    for i, layer in enumerate(fused.trunk.lstm):
        pre = f"trunk.lstm.{{}}_l{i}"
        state[pre.format("weight_ih")] = layer.ih.weight.detach()
        state[pre.format("bias_ih")] = layer.ih.bias.detach()
        state[pre.format("weight_hh")] = layer.hh.weight.detach()
        state[pre.format("bias_hh")] = torch.zeros_like(layer.ih.bias)
    state["trunk.embedding.weight"] = fused.trunk.embedding.weight.detach()
    state["heads.next.weight"] = fused.heads["next"].weight.detach()
    state["heads.next.bias"] = fused.heads["next"].bias.detach()
    opacus.load_state_dict(state)
    x = torch.randint(0, 6, (3, 9))
    assert torch.allclose(fused(x)["next"], opacus(x)["next"], atol=1e-5)
    assert model_problems(opacus, spec, {"next": 6}) == []


def test_default_lstm_is_mcmahans_shape() -> None:
    # McMahan et al. 2017 (and LEAF): 8-dim embedding, 2 x 256 LSTM units. The fused cell has
    # one bias per gate where nn.LSTM / DPLSTM have two (the sum is what matters).
    spec = InputSpec(shape=(80,), kind="token_ids", vocab=81)
    fused = build_model("lstm", spec, {"next": 81}, {})
    dplstm = build_model("lstm", spec, {"next": 81}, {"cell": "opacus"})
    assert fused.trunk.embedding.embedding_dim == 8
    assert [layer.hidden_size for layer in fused.trunk.lstm] == [256, 256]
    assert num_parameters(fused) == num_parameters(dplstm) - 2 * 4 * 256
