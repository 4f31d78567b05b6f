import pytest
from omegaconf.errors import ReadonlyConfigError

from configs.schema import load_config
from model import EfficientLVSM, LVSMDecoderOnly, LVSMEncoderDecoder, build_model, resolve_model_name
from tests.conftest import ROOT
from utils.config import ConfigError, join_overrides

OUR_CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("name,cls", [("Efficient-LVSM", EfficientLVSM), ("LVSM_scene_decoder_only", LVSMDecoderOnly),
                                      ("LVSM_scene_encoder_decoder", LVSMEncoderDecoder)])
def test_reference_configs_load_unchanged_and_select_our_model(reference_dir, name, cls):
    cfg = load_config(reference_dir / "configs" / f"{name}.yaml",
                      ["model.transformer.d=64", "model.transformer.d_head=16"])  # small, to build fast
    assert isinstance(build_model(cfg.model), cls)


def test_reference_config_values_survive(reference_dir):
    cfg = load_config(reference_dir / "configs" / "Efficient-LVSM.yaml")
    assert cfg.training.lr == pytest.approx(4e-4)
    assert cfg.training.view_selector.max_frame_dist == 192
    assert cfg.model.transformer.n_layer == 12 and cfg.model.image_tokenizer.type == "none"
    assert cfg.training.scene_scale_factor == pytest.approx(1.35)


@pytest.mark.parametrize("path", OUR_CONFIGS, ids=[p.stem for p in OUR_CONFIGS])
def test_our_configs_load(path):
    cfg = load_config(path)
    resolve_model_name(cfg.model.class_name)


def test_shipped_presets_exist():
    names = {p.stem for p in OUR_CONFIGS}
    assert {"efficient_lvsm_256", "efficient_lvsm_512", "lvsm_decoder_only", "lvsm_encoder_decoder", "tiny"} <= names
    assert load_config(ROOT / "configs/efficient_lvsm_512.yaml").model.image_tokenizer.image_size == 512
    assert load_config(ROOT / "configs/lvsm_encoder_decoder.yaml").model.transformer.n_latent_vectors == 3072


def test_overrides_in_both_forms():
    cfg = load_config(ROOT / "configs/tiny.yaml",
                      ["training.lr=2e-4", "training.target_has_input", "=", "false", "training.num_views=", "5",
                       "model.transformer.n_layer = 4"])
    assert cfg.training.lr == pytest.approx(2e-4)
    assert cfg.training.target_has_input is False
    assert cfg.training.num_views == 5
    assert cfg.model.transformer.n_layer == 4


def test_join_overrides_rejects_bare_word():
    with pytest.raises(ConfigError, match="'lr' is not of the form key=value"):
        join_overrides(["lr"])


def test_unknown_key_names_it_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'training\.lrr' \(did you mean 'training\.lr'\?\)"):
        load_config(ROOT / "configs/tiny.yaml", ["training.lrr=1"])
    with pytest.raises(ConfigError, match=r"'training\.d_head' \(did you mean 'model\.transformer\.d_head'\?\)"):
        load_config(ROOT / "configs/tiny.yaml", ["training.d_head=32"])
    bad = tmp_path / "typo.yaml"
    bad.write_text("model:\n  transformer:\n    n_layers: 3\n")
    with pytest.raises(ConfigError, match=rf"{bad}: unknown config key 'model\.transformer\.n_layers' "
                                          r"\(did you mean 'model\.transformer\.n_layer'\?\)"):
        load_config(bad)


def test_wrong_type_names_key_and_type():
    with pytest.raises(ConfigError, match=r"'training\.lr' expects float, got 'fast'"):
        load_config(ROOT / "configs/tiny.yaml", ["training.lr=fast"])
    with pytest.raises(ConfigError, match=r"'model\.transformer\.d' expects int"):
        load_config(ROOT / "configs/tiny.yaml", ["model.transformer.d=wide"])


def test_unreadable_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(broken)


def test_config_is_read_only():
    cfg = load_config(ROOT / "configs/tiny.yaml")
    with pytest.raises(ReadonlyConfigError):
        cfg.training.lr = 1.0


def test_unknown_model_name_suggests():
    with pytest.raises(ValueError, match="did you mean 'efficient_lvsm'"):
        resolve_model_name("efficient_lvms")


def _code_outside_schema() -> str:
    skip = {ROOT / "utils" / "config.py", ROOT / "configs" / "schema.py", ROOT / "model" / "config.py"}
    files = [p for p in ROOT.rglob("*.py") if p.relative_to(ROOT).parts[0] not in ("tests", ".venv", "experiments")]
    return "\n".join(p.read_text() for p in files if p not in skip)


def test_every_schema_key_is_read_or_listed_as_reference_only():
    """No silent key: a key no code mentions must be in REFERENCE_ONLY (which warns when it is set)."""
    import dataclasses
    import re

    from configs.schema import PATHS, REFERENCE_ONLY
    code = _code_outside_schema()
    assert set(REFERENCE_ONLY) <= set(PATHS)
    unread = []
    for path, tp in PATHS.items():
        leaf = path.rsplit(".", 1)[-1]
        if dataclasses.is_dataclass(tp) or path in REFERENCE_ONLY:
            continue
        if not re.search(rf"\.{leaf}\b|[\"']{leaf}[\"']", code):
            unread.append(path)
    assert unread == [], f"keys no code reads and REFERENCE_ONLY does not list: {unread}"
    for path in REFERENCE_ONLY:  # and a listed key is really unread (else it belongs in the read table)
        leaf = path.rsplit(".", 1)[-1]
        # names other code uses too: camera sources, the pose check's sweep, and the reference's dataset
        # length that scripts/check_training.py reads from a recorded file's own config dict
        if leaf in ("source", "rotate_y", "dataset_len"):
            continue
        assert not re.search(rf"\.{leaf}\b|[\"']{leaf}[\"']", code), f"{path} is listed as reference-only but read"


def test_reference_only_keys_warn_once_at_start(reference_dir):
    from configs.schema import inert_key_warnings
    warnings = inert_key_warnings(load_config(reference_dir / "configs" / "Efficient-LVSM.yaml"))
    assert [w.split("=")[0] for w in warnings] == ["warning: training.dataset_len", "warning: training.num_threads",
                                                   "warning: model.image_tokenizer.model_source_dir"]
    assert inert_key_warnings(load_config(reference_dir / "configs" / "LVSM_scene_decoder_only.yaml")) == []
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["model.transformer.attention_arch=flex", "demo.rotate_x=3"])
    assert len(inert_key_warnings(cfg)) == 2 and "attention_arch='flex'" in inert_key_warnings(cfg)[0]


def test_reference_script_keys_load(reference_dir):
    """The keys the authors' scripts pass (scripts/train.sh, scripts/eval.sh) load as they write them."""
    cfg = load_config(reference_dir / "configs" / "Efficient-LVSM.yaml", [
        "training.wandb_exp_name", "=", "x", "model.image_tokenizer.type", "=", "dinov3", "model.repa_config", "=",
        "8-2", "training.resume_ckpt", "=", "ckpt.pt", "training.reset_training_state", "=", "true",
        "training.checkpoint_every_epoch", "=", "5", "training.train_epochs", "=", "100", "training.train_time", "=", "24"])
    assert cfg.model.repa_config == "8-2" and cfg.training.resume_ckpt == "ckpt.pt" and cfg.training.reset_training_state


def test_rejected_reference_keys_say_why():
    for key in ("training.shuffle_input_views=true", "training.dynamic_input_view_num=true"):
        with pytest.raises(ConfigError, match=rf"'{key.split('=')[0]}' is a key of the reference .* not support"):
            load_config(ROOT / "configs" / "tiny.yaml", [key])


def test_readme_key_table_is_complete():
    """The README's table names every schema key and every rejected key once, with its true status."""
    import dataclasses
    import re

    from configs.schema import PATHS, REFERENCE_ONLY, REJECTED
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Coming from LVSM or Efficient-LVSM"):]
    section = section[:section.index("\n## ", 4)]
    status = {}
    for row in re.findall(r"^\| (`[^|]+) \| (read|ours|reference-only|rejected) \|", section, re.M):
        for key in re.findall(r"`([^`]+)`", row[0]):
            assert key not in status, f"{key} is listed twice"
            status[key] = row[1]
    keys = {p for p, t in PATHS.items() if not dataclasses.is_dataclass(t)} | set(REJECTED)
    assert set(status) == keys, f"missing {sorted(keys - set(status))}, unknown {sorted(set(status) - keys)}"
    for key, kind in status.items():
        expected = "reference-only" if key in REFERENCE_ONLY else "rejected" if key in REJECTED else kind
        assert kind == expected, f"{key}: the README says {kind}, the code {expected}"
        assert (kind in ("read", "ours")) == (key not in REFERENCE_ONLY and key not in REJECTED)


def test_empty_or_duplicated_yaml_is_an_error_naming_the_file_and_key(tmp_path):
    from configs.schema import load_config
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match=f"{empty}: the file is empty"):
        load_config(empty)
    twice = tmp_path / "twice.yaml"
    twice.write_text("training:\n  lr: 0.001\nmodel:\n  class_name: efficient_lvsm\ntraining:\n  lr: 0.002\n")
    with pytest.raises(ConfigError, match=f"{twice}: key 'training' is given twice .*lines 1 and 5"):
        load_config(twice)
    inner = tmp_path / "inner.yaml"
    inner.write_text("training:\n  lr: 0.001\n  lr: 0.002\n")
    with pytest.raises(ConfigError, match="key 'lr' is given twice"):
        load_config(inner)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="not a mapping"):
        load_config(listed)
