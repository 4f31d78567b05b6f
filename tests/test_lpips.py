"""utils/lpips_vgg.py: our LPIPS-VGG against values recorded from the lpips package (0.1.4), its weight
files and their errors, LpipsScorer's backends, and an evaluation that reports LPIPS for real."""

import importlib
import json
import math
import subprocess
import sys

import pytest
import torch

import evaluation.protocol as eval_protocol
from inference import main
from tests.conftest import REFERENCE, ROOT
from tests.test_inference import args, setup  # noqa: F401 (the module's generated scenes and checkpoint)
from utils.lpips_vgg import TAP_CHANNELS, VGG16_BLOCKS, LpipsVGG, write_weight_files
from utils.metrics import LpipsScorer
from utils.precision import autocast

LPIPS_FILE = REFERENCE / "lpips" / "lpips_vgg.pt"


@pytest.fixture(scope="module")
def recorded():
    if not LPIPS_FILE.is_file():
        pytest.skip(f"LPIPS reference file not found at {LPIPS_FILE}")
    return torch.load(LPIPS_FILE, weights_only=True)


def random_reference() -> dict:
    """Random weights in the layout of the LPIPS reference file (fp16 trunk, both head key sets)."""
    g = torch.Generator().manual_seed(0)
    features = {}
    for block in VGG16_BLOCKS:
        for i, c_in, c_out in block:
            features[f"{i}.weight"] = (torch.randn(c_out, c_in, 3, 3, generator=g) * (2 / (9 * c_in)) ** 0.5).half()
            features[f"{i}.bias"] = torch.zeros(c_out).half()
    heads = [torch.rand(1, c, 1, 1, generator=g) / c for c in TAP_CHANNELS]
    lin = {**{f"lin{k}.model.1.weight": h for k, h in enumerate(heads)},
           **{f"lins.{k}.model.1.weight": h for k, h in enumerate(heads)}}
    return {"format": "lpips_vgg_reference_v1", "vgg16_features": features, "lin": lin}


@pytest.fixture
def weight_files(tmp_path):
    """(VGG-16 file, heads file) written from the reference file, or from random weights without it."""
    source = LPIPS_FILE if LPIPS_FILE.is_file() else random_reference()
    vgg16, heads = tmp_path / "vgg16-397923af.pth", tmp_path / "vgg.pth"
    write_weight_files(source, vgg16, heads)
    return vgg16, heads


def test_matches_the_lpips_package(recorded, weight_files):
    net = LpipsVGG.from_files(*weight_files)
    assert recorded["lpips"].max() > 0.05  # values large enough for 1e-6 to tell a wrong formula apart
    for suffix in ("", "_nonsquare"):
        a, b = recorded[f"images_a{suffix}"], recorded[f"images_b{suffix}"]
        assert (net(a, b) - recorded[f"lpips{suffix}"]).abs().max() < 1e-6
    # through the scorer: any leading axes, one image at a time or all at once
    scorer = LpipsScorer("cpu", vgg16_path=weight_files[0], heads_path=weight_files[1])
    scores = scorer(recorded["images_a"].view(3, 4, 3, 64, 64), recorded["images_b"].view(3, 4, 3, 64, 64))
    assert scores.shape == (3, 4) and (scores.flatten() - recorded["lpips"]).abs().max() < 1e-6
    assert scorer.backend == f"ours (VGG-16 {weight_files[0]}, heads {weight_files[1]})"
    # Under the evaluation's autocast (the reference scores LPIPS in its bf16 block): close, not equal.
    bf16 = LpipsScorer("cpu", *weight_files, autocast=lambda: autocast("cpu", "bf16", on_cpu=True))
    shift = (bf16(recorded["images_a"], recorded["images_b"]) - recorded["lpips"]).abs().max()
    assert 1e-6 < shift < 1e-3


def test_other_key_layouts_give_the_same_values(recorded, tmp_path):
    """vgg16().features' own state dict (bare `N.weight`) and the heads as `lins.{k}...`: the same net."""
    torch.save(recorded["vgg16_features"], tmp_path / "features.pth")
    torch.save({k: v for k, v in recorded["lin"].items() if k.startswith("lins.")}, tmp_path / "lins.pth")
    net = LpipsVGG.from_files(tmp_path / "features.pth", tmp_path / "lins.pth")
    assert (net(recorded["images_a"], recorded["images_b"]) - recorded["lpips"]).abs().max() < 1e-6


def test_identical_images_give_zero(weight_files):
    net = LpipsVGG.from_files(*weight_files)
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    assert net(x, x).abs().max() == 0
    assert (net(x, x.flip(-1)) > 0).all()
    with pytest.raises(ValueError, match="at least 16x16"):
        net(x[..., :8, :], x[..., :8, :])


def _broken(tmp_path, path, name, edit):
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, tmp_path / name)
    return tmp_path / name


def test_bad_files_name_file_and_key(weight_files, tmp_path):
    vgg16, heads = weight_files
    no_key = _broken(tmp_path, vgg16, "no_key.pth", lambda s: s.pop("features.28.bias"))
    with pytest.raises(ValueError, match=r"features\.28\.bias missing from .*no_key\.pth.*vgg16-397923af\.pth"):
        LpipsVGG.from_files(no_key, heads)
    wrong = _broken(tmp_path, vgg16, "wrong.pth",
                    lambda s: s.update({"features.10.weight": torch.zeros(256, 64, 3, 3)}))
    with pytest.raises(ValueError, match=r"features\.10\.weight in .*wrong\.pth has shape \[256, 64, 3, 3\], "
                                         r"expected \[256, 128, 3, 3\]"):
        LpipsVGG.from_files(wrong, heads)
    head = _broken(tmp_path, heads, "head.pth", lambda s: s.pop("lin3.model.1.weight"))
    with pytest.raises(ValueError, match=r"lin3\.model\.1\.weight missing from .*head\.pth.*weights/v0\.1/vgg\.pth"):
        LpipsVGG.from_files(vgg16, head)
    with pytest.raises(FileNotFoundError, match=r"VGG-16 file not found: .*absent\.pth"):
        LpipsVGG.from_files(tmp_path / "absent.pth", heads)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"cannot read LPIPS heads file .*junk\.pth"):
        LpipsVGG.from_files(vgg16, tmp_path / "junk.pth")


def test_scorer_reports_why_ours_is_unavailable(weight_files, tmp_path):
    vgg16, heads = weight_files
    missing = LpipsScorer("cpu", vgg16_path=tmp_path / "nowhere.pth", heads_path=heads)
    with pytest.warns(RuntimeWarning, match="LPIPS is unavailable"):
        assert not missing.available
    assert missing.reason.startswith(f"inference.lpips_vgg16_path={tmp_path / 'nowhere.pth'}: no such file")
    assert missing.backend is None and missing(torch.rand(3, 16, 16), torch.rand(3, 16, 16)).isnan().all()
    broken = _broken(tmp_path, heads, "head.pth", lambda s: s.update({"lin0.model.1.weight": torch.zeros(1, 3, 1, 1)}))
    bad_heads = LpipsScorer("cpu", vgg16_path=vgg16, heads_path=broken)
    with pytest.warns(RuntimeWarning, match="LPIPS is unavailable"):
        assert "lin0.model.1.weight" in bad_heads.reason and str(broken) in bad_heads.reason


@pytest.fixture
def fake_lpips_package(tmp_path, monkeypatch, weight_files):
    """An `lpips` package on sys.path holding weights/v0.1/vgg.pth, whose import fails as the real one
    does without torchvision: finding its heads must not import it."""
    package = tmp_path / "site" / "lpips"
    (package / "weights" / "v0.1").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('No module named torchvision')\n")
    (package / "weights" / "v0.1" / "vgg.pth").write_bytes(weight_files[1].read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "lpips", raising=False)
    importlib.invalidate_caches()
    return package


def test_heads_come_from_an_installed_package_without_importing_it(fake_lpips_package, weight_files):
    scorer = LpipsScorer("cpu", vgg16_path=weight_files[0])
    x, y = torch.rand(2, 3, 3, 32, 32), torch.rand(2, 3, 3, 32, 32)
    assert scorer.available and "lpips" not in sys.modules
    direct = LpipsVGG.from_files(*weight_files)(x.flatten(0, 1), y.flatten(0, 1)).view(2, 3)
    assert (scorer(x, y) - direct).abs().max() == 0
    assert str(fake_lpips_package / "weights" / "v0.1" / "vgg.pth") in scorer.backend


def test_without_files_or_package_the_reason_names_the_config_keys(fake_lpips_package):
    scorer = LpipsScorer("cpu")  # no VGG-16 file: the package is tried, and its import fails
    with pytest.warns(RuntimeWarning, match="LPIPS is unavailable"):
        assert not scorer.available
    assert scorer.reason.startswith("ImportError: No module named torchvision")
    for text in ("inference.lpips_vgg16_path", "inference.lpips_heads_path", "vgg16-397923af.pth",
                 "weights/v0.1/vgg.pth", "pip install lpips"):
        assert text in scorer.reason


def test_evaluation_reports_lpips_from_the_config_keys(setup, weight_files, tmp_path, monkeypatch):  # noqa: F811
    seen = []

    class Recording(LpipsScorer):
        def __call__(self, pred, target):
            seen.append((pred.clone(), target.clone()))
            return super().__call__(pred, target)

    monkeypatch.setattr(eval_protocol, "LpipsScorer", Recording)
    vgg16, heads = weight_files
    summary = main(args(setup, tmp_path / "out", f"inference.lpips_vgg16_path={vgg16}",
                        f"inference.lpips_heads_path={heads}"))
    assert summary["lpips_status"] == "available"
    assert summary["lpips_backend"] == f"ours (VGG-16 {vgg16}, heads {heads})"
    rows = json.loads((tmp_path / "out" / "per_image.json").read_text())
    assert len(rows) == 6 and all(r["lpips"] is not None and math.isfinite(r["lpips"]) for r in rows)
    assert math.isfinite(summary["lpips"]) and summary["lpips"] > 0
    # the reported numbers are our net's on the rendered images, scene by scene, target by target
    net = LpipsVGG.from_files(vgg16, heads)
    expected = torch.cat([net(pred, target) for pred, target in seen])
    assert len(seen) == 2 and torch.tensor([r["lpips"] for r in rows]).sub(expected).abs().max() < 1e-6
    assert summary["lpips"] == pytest.approx(expected.mean().item(), abs=1e-6)


def test_check_reference_reads_the_lpips_file(recorded, tmp_path):
    run = [sys.executable, "-m", "scripts.check_reference"]
    result = subprocess.run([*run, str(LPIPS_FILE)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("ok "), result.stdout + result.stderr
    assert "lpips_nonsquare" in result.stdout
    off = {**recorded, "lpips_nonsquare": recorded["lpips_nonsquare"] + 2e-6}
    torch.save(off, tmp_path / "off.pt")
    result = subprocess.run([*run, str(tmp_path / "off.pt")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 1 and result.stdout.startswith("FAIL "), result.stdout + result.stderr
