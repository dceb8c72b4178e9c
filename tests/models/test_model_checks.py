"""Model config validation at load time and the DP check of every unit before training."""

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import torch
from opacus.layers import DPLSTM
from support import tiny_dict
from torch import nn

from privfed.config import config_hash, from_dict
from privfed.data.inputs import InputSpec
from privfed.engine import Engine
from privfed.errors import ConfigError
from privfed.models import MODELS, MultiHead
from privfed.models.check import model_problems

IMAGE = InputSpec(shape=(1, 8, 8), kind="image")
HEADS = {"identity": 10}


def _with_image_model(**group: object) -> dict[str, object]:
    """The tiny config with only its image group, updated; `hidden` (mlp only) dropped."""
    data = tiny_dict()
    image = {k: v for k, v in data["groups"]["image"].items() if k != "hidden"}
    data["groups"] = {"image": {**image, **group}}
    return data


def test_unknown_model_and_parameters_are_refused_at_load() -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(_with_image_model(model="cnnn"))
    assert "groups.image.model: unknown model 'cnnn'; did you mean 'cnn'?" in str(err.value)
    with pytest.raises(ConfigError) as err:
        from_dict(_with_image_model(model="cnn", hidden=[64], model_params={"width": 3}))
    msg = str(err.value)
    assert "groups.image.model_params.width is not a parameter of model 'cnn'" in msg
    assert "accepted: channels, hidden, groups" in msg
    with pytest.raises(ConfigError, match="hidden sets the widths of the mlp only"):
        from_dict(_with_image_model(model="cnn", hidden=[16]))
    with pytest.raises(ConfigError, match="hidden and model_params.hidden both set"):
        from_dict(_with_image_model(hidden=[16], model_params={"hidden": [8]}))


def test_defaults_keep_every_existing_config_hash() -> None:
    # configs written before models existed hash the same (run directories stay resumable)
    cfg = from_dict(_with_image_model())
    explicit = from_dict(_with_image_model(model="mlp", model_params={}, split_order="random"))
    assert config_hash(cfg) == config_hash(explicit)
    assert config_hash(from_dict(_with_image_model(model="cnn", hidden=[64]))) != config_hash(cfg)


class _BatchNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.heads = nn.ModuleDict({"identity": nn.Linear(4 * 64, 10)})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"identity": self.heads["identity"](self.norm(self.conv(x)).flatten(1))}


def test_incompatible_layers_are_named_with_their_fix() -> None:
    problems = model_problems(_BatchNormNet(), IMAGE, HEADS)
    assert len(problems) == 1
    assert problems[0].startswith("layer norm (BatchNorm2d) cannot be trained with DP-SGD")
    assert "replace it with nn.GroupNorm" in problems[0]

    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(8, 4, batch_first=True)
            self.heads = nn.ModuleDict({"identity": nn.Linear(4, 10)})

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"identity": self.heads["identity"](self.rnn(x.flatten(2))[0][:, -1])}

    (p,) = model_problems(Recurrent(), IMAGE, HEADS)
    assert p.startswith("layer rnn (LSTM)") and "opacus.layers.DPLSTM" in p
    assert DPLSTM.__name__ in p


class _MixingNet(nn.Module):
    """Subtracts the batch mean: each record's output depends on the others."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.fc(x.flatten(1))
        return {"identity": z - z.mean(0, keepdim=True)}


def test_a_layer_mixing_examples_fails_the_per_sample_check() -> None:
    problems = model_problems(_MixingNet(), IMAGE, HEADS)
    assert problems and all("depends on the other records" in p for p in problems)


def test_the_output_contract_is_checked() -> None:
    class Tuple(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1))

    (p,) = model_problems(Tuple(), IMAGE, HEADS)
    assert "returned Tensor; it must return a dict {task: logits}" in p
    trunk = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    wrong = MultiHead(trunk, 5, {"parity": 2})
    assert "expected exactly ['identity']" in model_problems(wrong, IMAGE, HEADS)[0]
    crash = MultiHead(nn.Linear(3, 5), 5, HEADS)  # wrong input size
    assert (
        "the module fails on a batch of image 1x8x8: RuntimeError"
        in model_problems(crash, IMAGE, HEADS)[0]
    )


@pytest.fixture
def registered() -> Iterator[None]:
    def batchnorm_model(inputs: InputSpec, heads: Mapping[str, int]) -> nn.Module:
        return _BatchNormNet()

    def mixing_model(
        inputs: InputSpec, heads: Mapping[str, int], *, scale: float = 1.0
    ) -> nn.Module:
        return _MixingNet()

    MODELS.register("test-bn", batchnorm_model)
    MODELS.register("test-mix", mixing_model)
    yield
    MODELS.unregister("test-bn")
    MODELS.unregister("test-mix")


def test_a_bad_module_stops_the_run_before_training(registered: None, tmp_path: Path) -> None:
    cfg = from_dict(_with_image_model(model="test-bn", architecture="per-task"))
    with pytest.raises(ConfigError) as err:
        Engine(cfg, tmp_path / "r", progress=False, echo=lambda m: None)
    msg = str(err.value)
    assert "groups.image.model ('test-bn', unit image.identity): layer norm (BatchNorm2d)" in msg
    assert "nn.GroupNorm" in msg
    assert not (tmp_path / "r").exists()  # nothing was written, nothing trained
    cfg = from_dict(
        _with_image_model(model="test-mix", model_params={"scale": 2.0}, tasks=["identity"])
    )
    with pytest.raises(ConfigError, match="depends on the other records"):
        Engine(cfg, tmp_path / "r", progress=False, echo=lambda m: None)


def test_a_factory_rejecting_its_values_is_a_config_error(tmp_path: Path) -> None:
    cfg = from_dict(_with_image_model(model="cnn", hidden=[64], model_params={"channels": [0]}))
    with pytest.raises(
        ConfigError, match=r"groups\.image\.model \('cnn', unit image\).*channels must be >= 1"
    ):
        Engine(cfg, tmp_path / "r", progress=False, echo=lambda m: None)
    # token ids into a cnn: the error says which model fits
    data = tiny_dict()
    data["groups"]["text"]["model"] = "cnn"
    data["groups"]["text"]["hidden"] = [64]
    with pytest.raises(
        ConfigError, match=r'groups\.text\.model.*cnn needs image inputs.*use model = "mlp"'
    ):
        Engine(from_dict(data), tmp_path / "r", progress=False, echo=lambda m: None)


def test_first_layer_inversion_refuses_models_without_an_input_layer() -> None:
    from attacks.inversion import first_layer_slices
    from privfed.client import UnitSpec

    cnn = UnitSpec(
        name="image",
        group="image",
        tasks=("identity",),
        in_features=64,
        hidden=(64,),
        heads=HEADS,
        model="cnn",
        inputs=IMAGE,
    )
    with pytest.raises(ValueError, match="only an mlp on float inputs has.*use inversion-dlg"):
        first_layer_slices(cnn)
    mlp = UnitSpec("image", "image", ("identity",), 64, (16,), HEADS)
    w, b, shape = first_layer_slices(mlp)
    assert shape == (16, 64) and b.start == w.stop
