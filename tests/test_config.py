"""Configs: defaults + experiment file + dotted overrides, validated before any work."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prefkit.config import RunConfig, load_config, parse_override, save_config
from prefkit.errors import ConfigError


def test_experiment_file_states_only_differences(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: exp1\ntrain:\n  lr: 1.0e-4\n")
    cfg = load_config(exp)
    assert cfg.name == "exp1"
    assert cfg.train.lr == pytest.approx(1e-4)
    # everything not named keeps its default
    assert cfg.train.batch_size == RunConfig().train.batch_size
    assert cfg.folds == RunConfig().folds


def test_dotted_overrides_win_over_file(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("train:\n  lr: 1.0e-4\n  epochs: 2\n")
    cfg = load_config(exp, ["train.lr=3e-5", "folds.n_folds=3", "model.lora.enabled=true", "train.folds=[0,2]"])
    assert cfg.train.lr == pytest.approx(3e-5)
    assert cfg.train.epochs == 2.0
    assert cfg.folds.n_folds == 3
    assert cfg.model.lora.enabled is True
    assert cfg.train.folds == [0, 2]


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.lrr=1", "override train.lrr=1: unknown key"),  # the override is blamed, not the file
        ("train.batch_size=abc", "train.batch_size"),
        ("folds.n_folds=1", "folds.n_folds"),
        ("stack.method=ridge", "stack.method"),
        ("model.load_in_4bit=true", "set lora.enabled=true"),
        ("nonsense", "key.path=value"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    message = err.value.one_line()
    assert fragment in message
    assert "\n" not in message


def test_unknown_key_in_file_names_the_file(tmp_path):
    exp = tmp_path / "bad.yaml"
    exp.write_text("features:\n  leaves: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml.*features.leaves: unknown key"):
        load_config(exp)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["name=roundtrip", "train.lr=2e-5", "model.lora.target_modules=[q_proj,v_proj]"])
    path = save_config(cfg, tmp_path)
    again = load_config(path)
    assert again == cfg
    assert yaml.safe_load(path.read_text())["train"]["lr"] == pytest.approx(2e-5)


def test_override_values_are_typed():
    assert parse_override("a.b=3") == {"a": {"b": 3}}
    assert parse_override("a=3e-5") == {"a": 3e-5}
    assert parse_override("a=true") == {"a": True}
    assert parse_override("a=[1, 2]") == {"a": [1, 2]}


def test_cli_bad_override_exits_2_with_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "prefkit", "config", "train.nope=1"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    "path", sorted(CONFIGS.glob("*.yaml")) + sorted(CONFIGS.glob("bench/*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS))
)
def test_every_shipped_experiment_file_validates(path):
    cfg = load_config(path, [])
    # Experiment files state only differences: whatever they leave out keeps its default.
    stated = yaml.safe_load(path.read_text())
    assert cfg.seed == stated.get("seed", RunConfig().seed)


def test_fsdp_launch_config_is_read_by_accelerate():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    launch = load_config_from_file(str(CONFIGS / "accelerate" / "fsdp.yaml"))
    assert launch.distributed_type == DistributedType.FSDP
    assert launch.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"


def test_fp16_autocast_over_fp16_weights_is_refused_before_training():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.mixed_precision=fp16", "model.dtype=float16"])
    assert "needs model.dtype=float32" in err.value.one_line()
    assert load_config(None, ["train.mixed_precision=fp16"]).model.dtype == "float32"


def test_bare_no_for_mixed_precision_means_no(tmp_path):
    # YAML reads a bare `no` as false, on the command line as in a file
    path = tmp_path / "x.yaml"
    path.write_text("train:\n  mixed_precision: no\n")
    assert load_config(path, []).train.mixed_precision == "no"
    assert load_config(None, ["train.mixed_precision=bf16", "train.mixed_precision=no"]).train.mixed_precision == "no"
