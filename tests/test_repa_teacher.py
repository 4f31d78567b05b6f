"""REPA's teacher (training/repa_teacher.py): tiny random DINOv2 / DINOv3 saved to disk, checked against
transformers run on its own and the reference's formulas re-derived here (Ayakaee/Efficient-LVSM
model/efficient_lvsm.py: _init_tokenizers, get_repa_feature, forward_features, forward_features_v3).
The helpers are shared with tests/test_repa.py."""

import json
import sys

import pytest
import torch
import torch.nn.functional as F

from training.repa_teacher import DinoTeacher

transformers = pytest.importorskip("transformers")

TINY_TEACHERS = {
    "dinov2": ("Dinov2Model", "Dinov2Config", dict(patch_size=14, image_size=56)),  # 4 x 4 position table
    "dinov3": ("DINOv3ViTModel", "DINOv3ViTConfig", dict(patch_size=16, num_register_tokens=4)),  # as vitb16
}
SIDE = {"dinov2": 336, "dinov3": 512}  # reference get_repa_feature: interpolate(x, size=336 | 512, mode='bicubic')
PREFIX = {"dinov2": 1, "dinov3": 5}  # reference: x[:, 1:] (dinov2_vitb14), x[0][:, 5:] (dinov3_vitb16)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from more threads, and OpenMP threads that spin against another
    busy process slow these tests down fifty-fold on a 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    out = {}
    for kind, (model_cls, config_cls, extra) in TINY_TEACHERS.items():
        torch.manual_seed(0)
        config = getattr(transformers, config_cls)(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                                   intermediate_size=64, **extra)
        out[kind] = tmp_path_factory.mktemp(kind)
        getattr(transformers, model_cls)(config).save_pretrained(out[kind])
    return out


def full_teacher(dirs, kind):
    """The whole saved teacher, loaded by transformers alone."""
    return getattr(transformers, TINY_TEACHERS[kind][0]).from_pretrained(dirs[kind]).eval()


def reference_input(images, side):
    """torchvision Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD), then bicubic to side x side."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return F.interpolate((images - mean) / std, size=side, mode="bicubic")


def reference_resize(tokens, grid):
    """get_repa_feature: a square grid of int(sqrt(n)), 'b (h w) d -> b d h w', bicubic to the grid."""
    N, n, d = tokens.shape
    g = int(n ** 0.5)
    x = tokens.reshape(N, g, g, d).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=grid, mode="bicubic", align_corners=False)
    return x.flatten(2).transpose(1, 2)


def reference_labels(full, kind, layer, images, grid):
    """Block `layer`'s output (hidden_states[0] is the embeddings), prefix dropped, resized."""
    hidden = full(pixel_values=reference_input(images, SIDE[kind]), output_hidden_states=True).hidden_states[layer]
    return reference_resize(hidden[:, PREFIX[kind]:], grid)



@pytest.mark.parametrize("kind", ["dinov2", "dinov3"])
@pytest.mark.parametrize("layer", [1, 2])
def test_teacher_target_is_block_T_before_the_norm(dirs, kind, layer):
    teacher = DinoTeacher(dirs[kind], kind, layer)  # no model_grid: transformers' own DINOv2 position table
    seen = []
    teacher.encoder.embeddings.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    images = torch.rand(3, 3, 24, 40)
    feats = teacher(images, (3, 5))
    assert feats.shape == (3, 15, 32) and feats.dtype == torch.float32
    torch.testing.assert_close(seen[0], reference_input(images, SIDE[kind]))  # the teacher sees 336 / 512 px
    full = full_teacher(dirs, kind)
    torch.testing.assert_close(feats, reference_labels(full, kind, layer, images, (3, 5)))
    assert len(teacher.encoder.encoder.layer if kind == "dinov2" else teacher.encoder.model.layer) == layer
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.train().training


def test_teacher_mode_follows_the_trainer_as_the_references(dirs):
    """The reference's model.train() reaches its teacher: DINOv3 (pos_embed_rescale 2) then rescales its
    RoPE coordinates at random, DINOv2 computes the same as in eval mode. training.repa_teacher_eval
    keeps it in eval mode."""
    images = torch.rand(2, 3, 16, 16)
    for kind in ("dinov3", "dinov2"):
        teacher = DinoTeacher(dirs[kind], kind, 2, follow_train_mode=True)
        still = teacher(images, (2, 2))
        teacher.train()
        assert teacher.training and teacher.encoder.training
        moving = [teacher(images, (2, 2)) for _ in range(2)]
        assert torch.equal(moving[0], moving[1]) == (kind == "dinov2")
        if kind == "dinov2":
            torch.testing.assert_close(moving[0], still)
        assert not teacher.eval().training
    assert not DinoTeacher(dirs["dinov3"], "dinov3", 2).train().training  # follow_train_mode=False
    from training.repa import AlignPoint, RepaAligner
    aligner = RepaAligner(DinoTeacher(dirs["dinov3"], "dinov3", 2, follow_train_mode=True), 32,
                          [AlignPoint("self_cross_blocks", 0, "target")], projector_dim=8)
    assert aligner.train().teacher.training and not aligner.eval().teacher.training  # the trainer's mode reaches it


def test_same_grid_is_no_resize(dirs):
    """The authors' setting: DINOv3 at 512 px gives 32 x 32 tokens, the 256-px renderer's grid with
    patch 8; the final bicubic resize is then the identity."""
    teacher = DinoTeacher(dirs["dinov3"], "dinov3", 3)
    images = torch.rand(2, 3, 16, 16)
    hidden = full_teacher(dirs, "dinov3")(pixel_values=reference_input(images, 512), output_hidden_states=True)
    torch.testing.assert_close(teacher(images, (32, 32)), hidden.hidden_states[3][:, 5:])


@pytest.mark.parametrize("model_grid", [8, 4])
def test_dinov2_position_table_as_the_reference(dirs, model_grid):
    """_init_tokenizers resamples dinov2's table to image_size // patch_size (timm resample_abs_pos_embed:
    bicubic, antialias); dinov2's interpolate_pos_encoding then resamples it to the 336-px input's 24 x 24
    (bicubic, scale factor (24 + 0.1) / grid). A table at its own size is left as it is at each step."""
    teacher = DinoTeacher(dirs["dinov2"], "dinov2", 2, model_grid=model_grid)
    full = full_teacher(dirs, "dinov2")
    table = full.embeddings.position_embeddings.detach()  # [1, 1 + 4*4, 32]
    grid = table[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    if model_grid != 4:
        grid = F.interpolate(grid, size=(model_grid, model_grid), mode="bicubic", antialias=True)
    grid = F.interpolate(grid, scale_factor=(24.1 / model_grid, 24.1 / model_grid), mode="bicubic")
    expected = torch.cat([table[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 576, 32)], dim=1)
    torch.testing.assert_close(teacher.encoder.embeddings.position_embeddings.detach(), expected)
    direct = F.interpolate(table[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2), size=(24, 24), mode="bicubic")
    assert not torch.allclose(direct.permute(0, 2, 3, 1).reshape(1, 576, 32), expected[:, 1:], atol=1e-4)
    images = torch.rand(2, 3, 32, 32)
    full.embeddings.position_embeddings = torch.nn.Parameter(expected)  # transformers keeps a table of its size
    torch.testing.assert_close(teacher(images, (4, 4)), reference_labels(full, "dinov2", 2, images, (4, 4)))


def test_teacher_with_registers(tmp_path):
    cfg = transformers.Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                 intermediate_size=64, patch_size=14, num_register_tokens=4)
    transformers.Dinov2WithRegistersModel(cfg).save_pretrained(tmp_path)
    teacher = DinoTeacher(tmp_path, "dinov2", 1)
    assert teacher.prefix == 5 and teacher(torch.rand(2, 3, 32, 32), (4, 4)).shape == (2, 16, 32)


def test_teacher_folder_errors(dirs, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"not found.*facebook/dinov3-vitb16-pretrain-lvd1689m.*save_pretrai"):
        DinoTeacher(tmp_path / "missing", "dinov3", 1)
    (tmp_path / "dinov3.pth").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="is a file"):
        DinoTeacher(tmp_path / "dinov3.pth", "dinov3", 1)
    with pytest.raises(FileNotFoundError, match="no config.json.*facebook/dinov2-base"):
        DinoTeacher(tmp_path, "dinov2", 1)
    with pytest.raises(ValueError, match=r"model_type 'dinov2' is not a dinov3.*dinov3-vitb16"):
        DinoTeacher(dirs["dinov2"], "dinov3", 1)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "dinov2"}))
    with pytest.raises(FileNotFoundError, match="weights"):
        DinoTeacher(tmp_path, "dinov2", 1)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"the optional extra .repa.: pip install -c constraints.txt"):
        DinoTeacher(tmp_path, "dinov2", 1)
