import math
from pathlib import Path

import pytest
from support import tiny_dict

from privfed.config import (
    ExperimentConfig,
    config_hash,
    dump_config,
    from_dict,
    load_config,
    with_overrides,
)
from privfed.errors import ConfigError


def test_defaults_are_valid():
    cfg = ExperimentConfig()
    assert cfg.dp.target_epsilon == 8.0
    assert cfg.federation.aggregator == "secagg"


def test_every_problem_reported_at_once_with_paths():
    data = tiny_dict(dp={"target_epsilon": -1, "delta": 2.0}, rounds=0)
    data["federation"]["cohort_fraction"] = 1.5
    data["groups"]["image"]["partition"]["alpha"] = 0
    data["train"]["bogus"] = 1
    with pytest.raises(ConfigError) as info:
        from_dict(data)
    text = "\n".join(info.value.problems)
    for needle in (
        "dp.target_epsilon must be in (0.0, inf], got -1.0",
        "dp.delta must be in (0.0, 1.0), got 2.0",
        "rounds must be in [1, inf], got 0",
        "federation.cohort_fraction must be in (0.0, 1.0]",
        "groups.image.partition.alpha must be in (0.0, inf]",
        "train.bogus is not a known field",
    ):
        assert needle in text, (needle, text)
    assert len(info.value.problems) == 6


def test_type_errors_name_the_field():
    data = tiny_dict(train={"local_steps": "five"})
    data["groups"]["image"]["tasks"] = "identity"
    with pytest.raises(ConfigError) as info:
        from_dict(data)
    text = str(info.value)
    assert "train.local_steps must be an integer, got 'five'" in text
    assert "groups.image.tasks must be an array" in text


def test_literal_field_lists_allowed_values():
    with pytest.raises(ConfigError, match="federation.aggregator must be one of 'secagg', 'plain'"):
        from_dict(tiny_dict(federation={"aggregator": "magic"}))


def test_missing_required_field():
    data = tiny_dict()
    del data["groups"]["image"]["source"]
    with pytest.raises(ConfigError, match="groups.image.source is required"):
        from_dict(data)


def test_inf_epsilon_means_non_private(tmp_path: Path):
    (tmp_path / "c.toml").write_text("[dp]\ntarget_epsilon = inf\n")
    cfg = load_config(tmp_path / "c.toml")
    assert math.isinf(cfg.dp.target_epsilon) and not cfg.dp.private
    cfg2 = from_dict({"dp": {"target_epsilon": "inf"}})
    assert config_hash(cfg) == config_hash(cfg2)


def test_dump_load_round_trip(tmp_path: Path, tiny_config):
    path = tmp_path / "resolved.toml"
    path.write_text(dump_config(tiny_config))
    again = load_config(path)
    assert again == tiny_config
    assert config_hash(again) == config_hash(tiny_config)


def test_overrides_change_hash_and_validate(tiny_config):
    cfg = with_overrides(
        tiny_config, {"dp.target_epsilon": 2.0, "groups.image.partition.alpha": 0.1}
    )
    assert cfg.dp.target_epsilon == 2.0
    assert cfg.groups["image"].partition.alpha == 0.1
    assert config_hash(cfg) != config_hash(tiny_config)
    with pytest.raises(ConfigError, match="dp.nope is not a known field"):
        with_overrides(tiny_config, {"dp.nope": 1})


def test_bad_toml_names_file(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = [\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(bad)


def test_quickstart_config_loads():
    from privfed.cli import _quickstart_path

    cfg = load_config(_quickstart_path())
    assert cfg.federation.num_clients == 20
    assert set(cfg.groups) == {"image", "text"}
    assert cfg.groups["image"].partition.alpha == 0.3
    assert cfg.dp.target_epsilon == 8.0


def test_hash_of_defaults_is_pinned():
    """Adding a field with a default must not change existing configs' hashes (run-directory
    names, resume and reproduce checks). Change the pin only for a deliberate format change
    (last: federation.mu replaced by federation.algorithm_params)."""
    assert config_hash(ExperimentConfig()) == "53f15bcd618c74d0"
    from support import tiny_dict as _td

    data = _td()
    data["attacks"] = [{"name": "mia-loss"}]
    assert config_hash(from_dict(data)) != config_hash(from_dict(_td()))


def test_algorithm_params_are_checked_against_the_algorithm():
    from support import tiny_dict as _td

    data = _td()
    data["federation"].update({"algorithm": "ditto", "algorithm_params": {"lambda": 0.3}})
    cfg = from_dict(data)
    from privfed.algorithms import make_algorithm

    alg = make_algorithm(cfg.federation.algorithm, cfg.federation.algorithm_params)
    assert alg.personal_mu == 0.3
    assert make_algorithm("fedprox").prox_mu == 0.01  # the declared default
    data["federation"]["algorithm_params"] = {"mu": 1.0, "lambda": "x"}
    with pytest.raises(ConfigError) as exc:
        from_dict(data)
    text = str(exc.value)
    assert "federation.algorithm_params.mu is not a parameter of algorithm 'ditto'" in text
    assert "it takes: lambda" in text
    assert "federation.algorithm_params.lambda must be a number, got 'x'" in text
    data["federation"].update({"algorithm": "fedavg", "algorithm_params": {"mu": 0.1}})
    with pytest.raises(ConfigError, match="it takes: none"):
        from_dict(data)


def test_old_federation_mu_says_what_to_write_instead():
    from support import tiny_dict as _td

    data = _td()
    data["federation"]["mu"] = 0.1
    with pytest.raises(ConfigError) as exc:
        from_dict(data)
    text = str(exc.value)
    assert "federation.mu was replaced by per-algorithm parameters" in text
    assert "[federation.algorithm_params]" in text and "lambda = ..." in text
