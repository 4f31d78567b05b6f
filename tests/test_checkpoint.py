import pytest
import torch

from model import CheckpointError, build_model, load_weights
from tests.conftest import random_views, tiny_config


def _model(name="efficient_lvsm", seed=0):
    torch.manual_seed(seed)
    return build_model(tiny_config(name).model).eval()


def test_round_trip_with_wrapper_prefixes_and_loss_keys(tmp_path):
    src, dst = _model(seed=1), _model(seed=2)
    state = {f"module._orig_mod.{k}": v for k, v in src.state_dict().items()}
    state["loss_computer.vgg.0.weight"] = torch.zeros(3)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": state, "step": 7}, path)
    ckpt = load_weights(dst, path)
    assert ckpt["step"] == 7
    views = random_views(1, 3)
    with torch.no_grad():
        args = (views[0][:, :2], views[1][:, :2], views[2][:, :2], views[1][:, 2:], views[2][:, 2:])
        assert torch.equal(src(*args), dst(*args))


def test_bare_state_dict_loads(tmp_path):
    path = tmp_path / "bare.pt"
    torch.save(_model(seed=1).state_dict(), path)
    load_weights(_model(), path)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = _model().state_dict()
    state.pop("rgbp_tokenizer.1.weight")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): rgbp_tokenizer\.1\.weight; "
                                              r"unexpected keys \(1\): extra\.weight"):
        load_weights(_model(), {"model": state})


def test_foreign_checkpoint_is_named(tmp_path):
    path = tmp_path / "decoder_only.pt"
    torch.save({"model": _model("lvsm_decoder_only").state_dict()}, path)
    with pytest.raises(CheckpointError, match=rf"{path} does not fit EfficientLVSM.*look like a 'lvsm_decoder_only'"):
        load_weights(_model(), path)


def test_shape_mismatch_names_key():
    state = _model().state_dict()
    state["image_token_decoder.1.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=r"image_token_decoder\.1\.weight \(3, 3\) vs model"):
        load_weights(_model(), {"model": state})


def test_truncated_and_missing_files(tmp_path):
    path = tmp_path / "full.pt"
    torch.save({"model": _model().state_dict()}, path)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    m = _model(seed=3)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(CheckpointError, match=rf"{cut}: cannot be read"):
        load_weights(m, cut)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # untouched
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_weights(m, tmp_path / "nope.pt")
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_weights(m, text)


def test_code_in_checkpoint_is_refused(tmp_path):
    import argparse  # any class outside torch's weights-only allowlist stands for arbitrary code

    path = tmp_path / "pickle.pt"
    torch.save({"model": _model().state_dict(), "extra": argparse.Namespace(a=1)}, path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_weights(_model(), path)
