"""training.api_key_path: the reference's YAML key file (`wandb: KEY`, its configs/api_keys.yaml)
and a bare key in a text file both give the key; a YAML file without `wandb` warns, naming it."""

import pytest

from training.log import _wandb_key


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_reference_yaml_key_file(tmp_path):
    path = tmp_path / "api_keys.yaml"
    path.write_text("# from the authors' template\nwandb: 0123abcd\nother_service: zzz\n")
    assert _wandb_key(str(path)) == "0123abcd"


def test_bare_key_file(tmp_path):
    path = tmp_path / "wandb_key.txt"
    path.write_text("  0123456789abcdef0123456789abcdef01234567\n")
    assert _wandb_key(str(path)) == "0123456789abcdef0123456789abcdef01234567"
    path.write_text("12345678\n")  # YAML would read an int: still the bare key, as written
    assert _wandb_key(str(path)) == "12345678"


@pytest.mark.parametrize("text", ["github: abc\n", "wandb:\n"])
def test_yaml_without_wandb_entry_warns_with_the_file(tmp_path, monkeypatch, text):
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.warns(UserWarning, match=r"keys.yaml is a YAML mapping without a 'wandb' entry"):
        assert _wandb_key(str(path)) is None
    monkeypatch.setenv("WANDB_API_KEY", "from_env")
    with pytest.warns(UserWarning, match="keys.yaml"):
        assert _wandb_key(str(path)) == "from_env"


def test_missing_file_warns_and_falls_back_to_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "from_env")
    with pytest.warns(UserWarning, match="nothing_here.yaml not found"):
        assert _wandb_key(str(tmp_path / "nothing_here.yaml")) == "from_env"
    assert _wandb_key(None) == "from_env"


def test_run_folder_keeps_config_commands_and_the_wandb_run(tmp_path, monkeypatch):
    """A run folder holds the resolved config and every command line; a resume logs into the same
    wandb run (offline mode: wandb writes its run files, no network)."""
    import sys

    import yaml

    from configs.schema import load_config
    from tests.conftest import ROOT
    from training.log import TrainLog
    from utils.config import to_dict

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(sys, "argv", ["train.py", "--config", "configs/tiny.yaml", "training.lr=3e-4"])
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["training.wandb_mode=offline", "training.lr=3e-4"])
    first = TrainLog(tmp_path, cfg.training, to_dict(cfg))
    run_id = (tmp_path / "wandb_run_id.txt").read_text().strip()
    assert first.wandb is not None and first.wandb.id == run_id
    first.close()
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == to_dict(cfg)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["training"]["lr"] == 3e-4

    resumed_cfg = load_config(ROOT / "configs" / "tiny.yaml", ["training.wandb_mode=offline", "training.lr=1e-4"])
    resumed = TrainLog(tmp_path, resumed_cfg.training, to_dict(resumed_cfg))
    assert resumed.wandb.id == run_id  # the same wandb run goes on
    resumed.close()
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["training"]["lr"] == 1e-4
    (old,) = tmp_path.glob("config.*.yaml")  # the first start's config, kept
    assert yaml.safe_load(old.read_text())["training"]["lr"] == 3e-4
    commands = [line for line in (tmp_path / "command.txt").read_text().splitlines() if not line.startswith("#")]
    assert len(commands) == 2  # "<python> train.py ...": the interpreter's name, then the arguments as given
    assert all(c.split(" ", 1)[1] == "train.py --config configs/tiny.yaml training.lr=3e-4" for c in commands)
