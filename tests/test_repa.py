"""REPA as the authors run it (training/repa.py): the student blocks the reference's pass_layers records,
its projector and loss (model/loss.py calculate_proj_loss), model.repa_config, the config errors,
the trainer integration; teachers and reference helpers from tests/test_repa_teacher.py."""

import json

import pytest
import torch

from configs.schema import config_from_dict, load_config
from model import build_model
from tests.conftest import TINY, random_views, tiny_config
from tests.test_repa_teacher import dirs, full_teacher, one_thread, reference_labels  # noqa: F401 (fixtures)
from training.repa import (AlignPoint, RepaAligner, RepaSpec, align_points, build_aligner, parse_repa_config,
                           projection_loss)
from utils.config import ConfigError, to_dict

NAMES = ["efficient_lvsm", "lvsm_decoder_only", "lvsm_encoder_decoder"]


def reference_proj_loss(x, label, loss_type):
    """model/loss.py: per view j, mean over tokens of the per-token loss; summed over views, / views."""
    total = 0.0
    for x_j, l_j in zip(x, label):
        diff = x_j - l_j
        if loss_type == "sl1":
            per_token = torch.where(diff.abs() < 1, 0.5 * diff ** 2, diff.abs() - 0.5).sum(-1) / x_j.shape[-1]
        elif loss_type == "l2":
            per_token = (diff ** 2).sum(-1) / x_j.shape[-1]
        else:
            per_token = -(x_j * l_j).sum(-1) / (x_j.norm(dim=-1) * l_j.norm(dim=-1))
        total = total + per_token.mean()
    return total, x.shape[0]


def repa_cfg(name, dirs, kind="dinov3", repa_config="3-2", loss="sl1", n_layer=3, **model):
    tiny = tiny_config(name).model
    t = {k: (n_layer if k.endswith("n_layer") else v) for k, v in TINY[name]["transformer"].items()}
    data = {"class_name": tiny.class_name, "transformer": t, "projector_dim": 16, "repa_config": repa_config,
            "image_tokenizer": {"type": kind, "model_path": str(dirs[kind]) if kind in dirs else None,
                                "image_size": 32, "patch_size": 8},
            "target_pose_tokenizer": {"image_size": 32, "patch_size": 8}, **model}
    return config_from_dict({"model": data, "training": {"enable_repa": True, "proj_loss_type": loss}})


def record_input(module, store, key):
    """Keep the first tensor entering `module` in store[key] (a pre-hook that leaves the call alone)."""
    def hook(mod, args):
        store.setdefault(key, args[0])
    module.register_forward_pre_hook(hook)


def views(b=2, v_in=2, v_t=2, h=32, w=32):
    images, c2w, fx = random_views(b, v_in + v_t, h, w)
    inputs = (images[:, :v_in], c2w[:, :v_in], fx[:, :v_in])
    return inputs, (c2w[:, v_in:], fx[:, v_in:]), images[:, v_in:]


@pytest.mark.parametrize("loss_type", ["sl1", "l2", "cos"])
def test_projection_loss_is_the_references(loss_type):
    torch.manual_seed(0)
    pred, label = torch.randn(3, 10, 6) * 2, torch.randn(3, 10, 6)
    total, count = reference_proj_loss(pred, label, loss_type)
    torch.testing.assert_close(projection_loss(pred, label, loss_type), total / count)
    with pytest.raises(ValueError, match="proj_loss_type='mse'"):
        projection_loss(pred, label, "mse")


@pytest.mark.parametrize("repa_config", ["3-2", "3-2t", "3-2i"])
def test_efficient_lvsm_blocks_and_loss(dirs, repa_config):
    """Block S's outputs, recomputed here block by block from the tokens entering block 1, projected
    and scored against the teacher run on its own, give the aligner's loss (reference loop)."""
    torch.manual_seed(0)
    cfg = repa_cfg("efficient_lvsm", dirs, repa_config=repa_config)
    model = build_model(cfg.model)
    aligner = build_aligner(cfg, model)
    entering = {}
    record_input(model.input_self_attn_blocks[0], entering, "input")
    record_input(model.self_cross_blocks[0], entering, "target")
    inputs, targets, target_images = views()
    model(*inputs, *targets)
    loss = aligner.loss(inputs[0], target_images)
    with torch.no_grad():
        x, t = entering["input"], entering["target"]  # [b*v_in, n, d], [b*v_t, n, d]
        for enc, dec in list(zip(model.input_self_attn_blocks, model.self_cross_blocks))[:2]:  # S = 2
            x = enc(x)
            t = dec(t, *dec.input_kv(x.reshape(2, -1, x.shape[-1])))
        full = full_teacher(dirs, "dinov3")
        hidden = {"input": x, "target": t}
        labels = {"input": reference_labels(full, "dinov3", 3, inputs[0].flatten(0, 1), (4, 4)),
                  "target": reference_labels(full, "dinov3", 3, target_images.flatten(0, 1), (4, 4))}
        blocks = {"input": "input_self_attn_blocks_1", "target": "self_cross_blocks_1"}
        total, count = 0.0, 0
        for role in parse_repa_config(repa_config).streams:
            part, rows = reference_proj_loss(aligner.projectors[blocks[role]](hidden[role]), labels[role], "sl1")
            total, count = total + part, count + rows
    assert sorted(aligner.projectors) == sorted(blocks[r] for r in parse_repa_config(repa_config).streams)
    torch.testing.assert_close(loss.detach(), total / count)


def test_decoder_only_block_and_loss(dirs):
    torch.manual_seed(0)
    cfg = repa_cfg("lvsm_decoder_only", dirs, kind="dinov2", repa_config="2-3", loss="cos")
    model = build_model(cfg.model)
    aligner = build_aligner(cfg, model)
    entering = {}
    record_input(model.transformer_blocks[0], entering, "z")
    inputs, targets, target_images = views(b=1)
    model(*inputs, *targets)
    loss = aligner.loss(inputs[0], target_images)
    with torch.no_grad():
        z = entering["z"]  # [b*v_t, (v_in+1)*n, d]
        for block in model.transformer_blocks:  # S = 3: all of them
            z = block(z)
        full = full_teacher(dirs, "dinov2")
        full.embeddings.position_embeddings = aligner.teacher.encoder.embeddings.position_embeddings
        label = reference_labels(full, "dinov2", 2, target_images.flatten(0, 1), (4, 4))
        total, count = reference_proj_loss(aligner.projectors["transformer_blocks_2"](z[:, -16:]), label, "cos")
    torch.testing.assert_close(loss.detach(), total / count)


def test_align_points():
    def points(name, text, n_layer=2):
        t = {k: (n_layer if k.endswith("n_layer") else v) for k, v in TINY[name]["transformer"].items()}
        model = build_model(config_from_dict({"model": {"class_name": name, "transformer": t}}).model)
        return [(p.blocks, p.index, p.images, p.tokens) for p in align_points(model, parse_repa_config(text))]
    assert points("efficient_lvsm", "8-2") == [("input_self_attn_blocks", 1, "input", "all"),
                                               ("self_cross_blocks", 1, "target", "all")]
    assert points("efficient_lvsm", "8-1t") == [("self_cross_blocks", 0, "target", "all")]
    assert points("efficient_lvsm", "8-2i") == [("input_self_attn_blocks", 1, "input", "all")]
    assert points("lvsm_decoder_only", "8-2") == [("transformer_blocks", 1, "target", "last")]
    assert points("lvsm_encoder_decoder", "8-1t") == [("transformer_decoder", 0, "target", "first")]
    with pytest.raises(ConfigError, match="input stream only"):
        points("lvsm_decoder_only", "8-2i")
    with pytest.raises(ConfigError, match=r"model.repa_config: student block 3 is outside 1..2"):
        points("efficient_lvsm", "8-3")


def test_parse_repa_config():
    assert parse_repa_config("8-2") == RepaSpec(8, 2, ("input", "target"))
    assert parse_repa_config("12-3t") == RepaSpec(12, 3, ("target",))
    assert parse_repa_config("6-2i") == RepaSpec(6, 2, ("input",))
    for bad in [1, "1", "8", "8-2x", "0-2", "8-0", "8-3t-8-2i", "8-e2"]:
        with pytest.raises(ConfigError, match=r"model.repa_config=.*'T-S'.*'T-St'.*'T-Si'"):
            parse_repa_config(bad)
    with pytest.raises(ConfigError, match="'8-34' aligns several blocks"):
        parse_repa_config("8-34")


def test_reference_yaml_loads_and_its_repa_config_is_refused(reference_dir, dirs):
    path = reference_dir / "configs" / "Efficient-LVSM.yaml"
    cfg = load_config(path)  # repa_config: 1 (an int) in a str field
    assert cfg.model.repa_config == "1" and not cfg.training.enable_repa
    cfg = load_config(path, ["training.enable_repa=true", "model.image_tokenizer.type=dinov3",
                             f"model.image_tokenizer.model_path={dirs['dinov3']}", "model.transformer.n_layer=2"])
    with pytest.raises(ConfigError, match="model.repa_config='1'"):
        build_aligner(cfg, build_model(cfg.model))


def test_config_errors(dirs):
    model = build_model(repa_cfg("efficient_lvsm", dirs).model)
    for kind in ["none", "clip"]:
        with pytest.raises(ConfigError, match=rf"training.enable_repa.*model.image_tokenizer.type.*got '{kind}'"):
            build_aligner(repa_cfg("efficient_lvsm", dirs, kind=kind), model)
    no_path = repa_cfg("efficient_lvsm", {})
    with pytest.raises(ConfigError, match=r"model.image_tokenizer.model_path.*dinov3-vitb16.*save_pretrained"):
        build_aligner(no_path, model)
    with pytest.raises(ConfigError, match=r"model.repa_config: teacher block 9 is outside 1..3"):
        build_aligner(repa_cfg("efficient_lvsm", dirs, repa_config="9-2"), model)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_blocks_up_to_S(name, dirs):
    torch.manual_seed(0)
    cfg = repa_cfg(name, dirs, repa_config="3-2")
    model = build_model(cfg.model)
    aligner = build_aligner(cfg, model)
    inputs, targets, target_images = views()
    model(*inputs, *targets)
    loss = aligner.loss(inputs[0], target_images)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for stack in {p.blocks for p in aligner.points}:
        before, aligned, after = getattr(model, stack)
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in before.parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in aligned.parameters())
        assert all(p.grad is None for p in after.parameters())  # nothing after the aligned block
    assert all(p.grad is not None for p in aligner.parameters())
    assert all(p.grad is None for p in aligner.teacher.parameters())


def test_gradient_checkpointing_gives_the_same_gradients(dirs):
    torch.manual_seed(0)
    cfg = repa_cfg("efficient_lvsm", dirs, repa_config="3-2")
    model = build_model(cfg.model).train()
    aligner = build_aligner(cfg, model)
    inputs, targets, target_images = views(b=1)
    grads = []
    for every in (0, 1):  # 1: every block re-runs (and re-fires its hook) in the backward pass
        model.grad_checkpoint_every = every
        model.zero_grad()
        model(*inputs, *targets)
        aligner.loss(inputs[0], target_images).backward()
        grads.append(model.input_self_attn_blocks[0].attn.to_qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("name", NAMES)
def test_training_the_projectors_lowers_the_loss(name, dirs):
    torch.manual_seed(0)
    for loss_type in ["sl1", "cos"]:
        cfg = repa_cfg(name, dirs, repa_config="2-1", loss=loss_type, n_layer=2)
        model = build_model(cfg.model)
        aligner = build_aligner(cfg, model)
        aligner.detach()
        inputs, targets, target_images = views(b=1)
        opt = torch.optim.Adam(aligner.parameters(), lr=1e-2)
        losses = []
        with aligner.capturing(model):
            for _ in range(4):
                with torch.no_grad():
                    model(*inputs, *targets)
                loss = aligner.loss(inputs[0], target_images)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
        assert all(a > b for a, b in zip(losses, losses[1:])), (loss_type, losses)


def test_detach_state_dict_and_teacher_moves(dirs):
    cfg = repa_cfg("efficient_lvsm", dirs, repa_config="2-1", n_layer=2)
    model = build_model(cfg.model)
    aligner = build_aligner(cfg, model)
    blocks = [model.input_self_attn_blocks[0], model.self_cross_blocks[0]]
    assert all(len(b._forward_hooks) == 1 for b in blocks)
    with pytest.raises(RuntimeError, match="already attached"):
        aligner.attach(model)
    aligner.detach()
    assert all(len(b._forward_hooks) == 0 for b in blocks)
    inputs, targets, target_images = views(b=1)
    with torch.no_grad():
        model(*inputs, *targets)
    with pytest.raises(RuntimeError, match="no hidden states captured"):
        aligner.loss(inputs[0], target_images)
    keys = set(aligner.state_dict())
    assert keys and all(k.startswith("projectors.") for k in keys)
    build_aligner(cfg, model).load_state_dict(aligner.state_dict())
    aligner.to(torch.float64).train()
    assert all(p.dtype == torch.float64 for p in aligner.teacher.parameters())
    assert aligner.teacher.training and aligner.training  # as the reference: model.train() reaches the teacher
    evaluating = config_from_dict({**to_dict(cfg), "training": {**to_dict(cfg)["training"], "repa_teacher_eval": True}})
    assert not build_aligner(evaluating, model).train().teacher.training  # training.repa_teacher_eval


def test_mismatched_views_and_missing_block(dirs):
    cfg = repa_cfg("lvsm_decoder_only", dirs, repa_config="2-1", n_layer=2)
    model = build_model(cfg.model)
    aligner = build_aligner(cfg, model)
    inputs, targets, target_images = views(b=1, v_t=2)
    with torch.no_grad():
        model(*inputs, *targets)
    with pytest.raises(ValueError, match=r"transformer_blocks\[0\].*expected 1 rows"):
        aligner.loss(None, target_images[:, :1])
    bad = RepaAligner(aligner.teacher, 32, [AlignPoint("transformer_blocks", 5, "target", "last")])
    with pytest.raises(ValueError, match=r"transformer_blocks\[5\] is outside 0..1"):
        bad.attach(model)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_autocast_bf16(dirs, device):
    torch.manual_seed(0)
    cfg = repa_cfg("efficient_lvsm", dirs, repa_config="2-1", n_layer=2)
    model = build_model(cfg.model).to(device)
    aligner = build_aligner(cfg, model).to(device)
    inputs, targets, target_images = (tuple(t.to(device) for t in x) if isinstance(x, tuple) else x.to(device)
                                      for x in views(b=1))
    with torch.autocast(device, dtype=torch.bfloat16):
        model(*inputs, *targets)
        loss = aligner.loss(inputs[0], target_images)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in aligner.parameters())
    assert aligner.teacher.mean.device.type == device  # moved with the aligner


def test_trainer_runs_repa(dirs, tmp_path):
    """training.setup.build_repa -> build_aligner inside the training loop: two steps, the REPA
    term logged, the projectors saved beside the model."""
    from data import synthetic
    from tests.conftest import ROOT
    from training.loop import train
    from utils.distributed import init_distributed
    synthetic.generate(tmp_path / "rooms", "rooms", 4, 1, frames=10, size=32, seed=0)
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [
        "model.image_tokenizer.image_size=32", "model.target_pose_tokenizer.image_size=32", "model.transformer.d=32",
        "model.transformer.d_head=8", "model.transformer.n_layer=2", "model.projector_dim=16",
        "model.image_tokenizer.type=dinov3", f"model.image_tokenizer.model_path={dirs['dinov3']}",
        "model.repa_config=3-2", "training.enable_repa=true", "training.proj_loss_type=cos",
        f"training.dataset_path={tmp_path / 'rooms' / 'train' / 'full_list.txt'}",
        f"training.checkpoint_dir={tmp_path / 'ckpt'}", "training.batch_size_per_gpu=2",
        "training.view_selector.min_frame_dist=3", "training.view_selector.max_frame_dist=8", "training.device=cpu",
        "training.print_every=1", "training.warmup=1", "training.train_steps=2", "training.checkpoint_every=2"])
    result = train(cfg, init_distributed("cpu"))
    assert result["step"] == 2
    lines = [json.loads(line) for line in (tmp_path / "ckpt" / "metrics.jsonl").read_text().splitlines()]
    assert all(-1 <= r["repa"] <= 1 for r in lines)  # minus a cosine similarity, as the reference logs it
    ckpt = torch.load(tmp_path / "ckpt" / "ckpt_00000002.pt", weights_only=True)
    assert sorted({k.split(".")[1] for k in ckpt["repa"]}) == ["input_self_attn_blocks_1", "self_cross_blocks_1"]
