"""VGG-19 perceptual loss: weight files (MatConvNet .mat, torchvision state dict), kernel orientation,
the reference formula, gradients, bf16 autocast, and the errors for bad files."""

import numpy as np
import pytest
import scipy.io
import scipy.signal
import torch
import torch.nn as nn

from training.perceptual import (LOSS_LAYERS, TORCHVISION_INDEX, VGG19_CONVS, VGG19_LAYERS, PerceptualLoss,
                                 VGG19Features, detect_weight_format, write_matconvnet)

LOSS_CONVS = [name for name in VGG19_CONVS if VGG19_LAYERS.index(name) <= VGG19_LAYERS.index("relu5_2")]


def random_matconvnet_convs(names, seed=0, override=None):
    """{name: (kernel [kh, kw, c_in, c_out], bias [c_out])} float32, MatConvNet layout."""
    rng = np.random.default_rng(seed)
    convs = {}
    for name in names:
        c_in, c_out = VGG19_CONVS[name]
        shape = (override or {}).get(name, (3, 3, c_in, c_out))
        kernel = rng.standard_normal(shape, dtype=np.float32) * np.float32((2.0 / (9 * c_in)) ** 0.5)
        convs[name] = (kernel, rng.standard_normal(shape[-1], dtype=np.float32) * np.float32(0.1))
    return convs




def torchvision_state(convs):
    state = {f"features.{TORCHVISION_INDEX[name]}.weight": torch.from_numpy(k).permute(3, 2, 0, 1).contiguous()
             for name, (k, _) in convs.items()}
    state.update({f"features.{TORCHVISION_INDEX[name]}.bias": torch.from_numpy(b) for name, (_, b) in convs.items()})
    state["classifier.6.weight"] = torch.zeros(10, 4)  # ignored
    return state


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """The same random conv1_1 ... conv5_2 weights as a .mat file and as a legacy-format .pth file."""
    root = tmp_path_factory.mktemp("vgg")
    convs = random_matconvnet_convs(LOSS_CONVS)
    write_matconvnet(root / "imagenet-vgg-verydeep-19.mat", convs)
    # the released vgg19-dcbb9e9d.pth predates torch's zip format
    torch.save(torchvision_state(convs), root / "vgg19.pth", _use_new_zipfile_serialization=False)
    return convs, root / "imagenet-vgg-verydeep-19.mat", root / "vgg19.pth"


@pytest.fixture(scope="module")
def mat_loss(weight_files):
    loss = PerceptualLoss.from_file(weight_files[1])
    assert loss.weight_format == "matconvnet"
    return loss


@pytest.fixture(scope="module")
def pth_vgg(weight_files):
    vgg = VGG19Features(LOSS_LAYERS)
    assert vgg.load_file(weight_files[2]) == "torchvision"
    return vgg


def he_normal_(vgg: VGG19Features, seed: int) -> VGG19Features:
    """He-normal kernels and zero biases from `seed`: random weights that keep activations O(input)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in vgg.convs.values():
            fan_in = conv.weight[0].numel()
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            conv.bias.zero_()
    return vgg


@pytest.fixture(scope="module")
def random_loss():
    """Random VGG weights in MatConvNet's input convention: not a perceptual loss, a test of the formula."""
    return PerceptualLoss(he_normal_(VGG19Features(LOSS_LAYERS, pool="avg"), seed=0), "matconvnet")


def test_layer_table():
    assert len(VGG19_LAYERS) == 37 and len(VGG19_CONVS) == 16
    # the torchvision `features` indices the reference copies MatConvNet layers into
    assert list(TORCHVISION_INDEX.values()) == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    assert len(VGG19Features(["relu1_2"]).convs) == 2
    assert list(VGG19Features(LOSS_LAYERS).convs) == LOSS_CONVS  # stops at conv5_2
    with pytest.raises(ValueError, match="relu9_9"):
        VGG19Features(["relu9_9"])


@pytest.mark.parametrize("which", ["mat", "pth"])
def test_round_trip_exact(weight_files, mat_loss, pth_vgg, which):
    convs = weight_files[0]
    vgg = mat_loss.vgg if which == "mat" else pth_vgg
    for name, (kernel, bias) in convs.items():
        w = vgg.convs[name].weight.detach()  # [c_out, c_in, kh, kw]
        assert torch.equal(w, torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))), name
        assert torch.equal(vgg.convs[name].bias.detach(), torch.from_numpy(bias)), name


def test_matconvnet_kernel_orientation(weight_files, mat_loss):
    """conv1_1 loaded from the .mat equals MatConvNet's vl_nnconv computed independently.

    MatConvNet (manual, section on convolution): x is H x W x D (rows first), f is H' x W' x D x D'', and
    y[i, j, d''] = b[d''] + sum_{i', j', d'} f[i', j', d', d''] * x[i + i', j + j', d']  (a correlation).
    """
    kernel, bias = weight_files[0]["conv1_1"]
    x = np.random.default_rng(1).random((9, 6, 3), dtype=np.float32)  # H x W x C, non-square
    y_ref = np.stack([sum(scipy.signal.correlate2d(x[:, :, c], kernel[:, :, c, k], mode="same")
                          for c in range(3)) + bias[k] for k in range(kernel.shape[3])], axis=-1)
    with torch.no_grad():
        y = mat_loss.vgg.convs["conv1_1"](torch.from_numpy(x).permute(2, 0, 1)[None])  # [1, 64, H, W]
    y = y[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(y, y_ref, atol=1e-5)
    # the check can tell orientations apart: spatially transposed kernels give a different answer
    y_transposed = np.stack([sum(scipy.signal.correlate2d(x[:, :, c], kernel[:, :, c, k].T, mode="same")
                                 for c in range(3)) + bias[k] for k in range(kernel.shape[3])], axis=-1)
    assert np.abs(y - y_transposed).max() > 0.1


def test_formats_give_same_features(mat_loss, pth_vgg):
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        for a, b in zip(mat_loss.vgg(x), pth_vgg(x)):
            assert torch.equal(a, b)


def test_loss_is_the_reference_formula(weight_files, mat_loss):
    """Against the reference's structure, rebuilt independently: torchvision's cfg 'E' sequence with
    AvgPool, sliced at [0:4], [4:9], [9:14], [14:23], [23:32]; (e0 + e1/2.6 + ... + e5*10/1.5) / 255."""
    layers, c_in = [], 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512]:
        if v == "M":
            layers.append(nn.AvgPool2d(2, 2))
            continue
        layers += [nn.utils.skip_init(nn.Conv2d, c_in, v, 3, padding=1), nn.ReLU()]  # weights loaded below
        c_in = v
    seq = nn.Sequential(*layers)
    seq.load_state_dict({k[len("features."):]: v for k, v in torchvision_state(weight_files[0]).items()
                         if k.startswith("features.")})
    blocks = [seq[a:b] for a, b in [(0, 4), (4, 9), (9, 14), (14, 23), (23, 32)]]

    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(1, 3, 32, 16, generator=g), torch.rand(1, 3, 32, 16, generator=g)
    mean = torch.tensor([123.68, 116.779, 103.939]).view(1, 3, 1, 1)
    with torch.no_grad():
        p, t = pred * 255 - mean, target * 255 - mean
        errors = [(p - t).abs().mean()]
        for block, scale in zip(blocks, [1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5]):
            p, t = block(p), block(t)
            errors.append((p - t).abs().mean() * scale)
        expected = sum(errors) / 255.0
        got = mat_loss(pred, target)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)


def test_zero_for_identical_positive_otherwise(random_loss):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    assert random_loss(x, x).item() == 0.0
    value = random_loss(x, y)
    assert value.shape == () and value.dtype == torch.float32
    assert value.item() > (x - y).abs().mean().item() > 0  # the feature terms add to the pixel L1


def test_gradient_reaches_pred_not_vgg(random_loss):
    g = torch.Generator().manual_seed(2)
    pred = torch.rand(1, 3, 16, 16, generator=g, requires_grad=True)
    target = torch.rand(1, 3, 16, 16, generator=g, requires_grad=True)
    random_loss.train()
    assert not random_loss.training and not random_loss.vgg.training
    random_loss(pred, target).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert target.grad is None
    assert all(not p.requires_grad and p.grad is None for p in random_loss.parameters())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_finite_and_close(random_loss, dtype):
    g = torch.Generator().manual_seed(3)
    pred = torch.rand(1, 3, 16, 16, generator=g, requires_grad=True)
    target = torch.rand(1, 3, 16, 16, generator=g)
    full = random_loss(pred, target).item()
    with torch.autocast("cpu", dtype=dtype):
        value = random_loss(pred, target)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value) and torch.isfinite(pred.grad).all()
    if dtype == torch.bfloat16:  # the VGG ran in bf16: close to fp32, not equal
        assert value.item() != full and value.item() == pytest.approx(full, rel=2e-2)
    else:  # fp16's range is too small for [0, 255]-scale activations: the VGG ran in fp32
        assert value.item() == pytest.approx(full, rel=1e-6)


# ----------------------------------------------------------------------------- bad files

def test_missing_file_says_how_to_get_it(tmp_path):
    path = tmp_path / "imagenet-vgg-verydeep-19.mat"
    with pytest.raises(FileNotFoundError, match="perceptual loss weight file") as info:
        PerceptualLoss.from_file(path)
    assert str(path) in str(info.value) and "matconvnet" in str(info.value).lower()
    assert "vgg19" in str(info.value)


@pytest.mark.parametrize("name", ["garbage.mat", "garbage.pth"])
def test_garbage_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"<html>not found</html>" * 20)
    with pytest.raises(ValueError, match="neither a MATLAB") as info:
        detect_weight_format(path)
    assert str(path) in str(info.value)


def test_truncated_files(tmp_path):
    mat, pth = tmp_path / "full.mat", tmp_path / "full.pth"
    convs = random_matconvnet_convs(["conv1_1", "conv1_2"])
    write_matconvnet(mat, convs)
    torch.save(torchvision_state(convs), pth)
    for path in (mat, pth):
        cut = tmp_path / f"cut{path.suffix}"
        data = path.read_bytes()
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match="truncated or corrupt") as info:
            VGG19Features(["relu1_2"]).load_file(cut)
        assert str(cut) in str(info.value)


def test_matconvnet_wrong_shape_and_missing_layer(tmp_path):
    path = tmp_path / "bad.mat"
    names = ["conv1_1", "conv1_2", "conv2_1"]
    write_matconvnet(path, random_matconvnet_convs(names, override={"conv2_1": (3, 3, 32, 128)}))
    with pytest.raises(ValueError, match=r"conv2_1 .*\[3, 3, 32, 128\].*\[3, 3, 64, 128\]") as info:
        VGG19Features(["relu2_1"]).load_file(path)
    assert str(path) in str(info.value)
    write_matconvnet(path, random_matconvnet_convs(["conv1_1"]))
    with pytest.raises(ValueError, match="layer conv1_2 not found"):
        VGG19Features(["relu1_2"]).load_file(path)
    scipy.io.savemat(str(path), {"net": np.zeros(3)})
    with pytest.raises(ValueError, match="no 'layers' variable"):
        VGG19Features(["relu1_2"]).load_file(path)


@pytest.mark.parametrize("zip_format", [True, False])
def test_torchvision_wrong_shape_missing_key_not_a_dict(tmp_path, zip_format):
    path = tmp_path / "bad.pth"

    def save(obj):
        torch.save(obj, path, _use_new_zipfile_serialization=zip_format)

    state = torchvision_state(random_matconvnet_convs(["conv1_1", "conv1_2"]))
    save({**state, "features.2.weight": torch.zeros(64, 64, 5, 5)})
    with pytest.raises(ValueError, match=r"features\.2\.weight \(conv1_2\).*\[64, 64, 5, 5\]") as info:
        VGG19Features(["relu1_2"]).load_file(path)
    assert str(path) in str(info.value)
    save({k: v for k, v in state.items() if k != "features.2.bias"})
    with pytest.raises(ValueError, match=r"features\.2\.bias \(conv1_2\) missing"):
        VGG19Features(["relu1_2"]).load_file(path)
    save([torch.zeros(1)])
    with pytest.raises(ValueError, match="expected a torchvision VGG-19 state dict"):
        VGG19Features(["relu1_2"]).load_file(path)


def test_input_shape_errors(random_loss):
    with pytest.raises(ValueError, match=r"\[2, 1, 8, 8\]"):
        random_loss(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="pred and target"):
        random_loss(torch.rand(2, 3, 16, 16), torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"at least 16x16.*\[8, 32\]"):
        random_loss(torch.rand(1, 3, 8, 32), torch.rand(1, 3, 8, 32))
