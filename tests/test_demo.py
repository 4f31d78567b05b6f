"""The demo session: incremental adds and removes render what a full forward renders, every step's
cost is recorded, LVSM falls back to recomputing; scenes load normalized once; app.py parses
its arguments without gradio."""

import json
import sys

import pytest
import torch

from configs.schema import config_from_dict
from data import synthetic
from demo.session import DemoSession, SceneViews, load_scene
from model import build_model
from tests.conftest import ROOT, random_views, tiny_config
from utils.geometry import invert_pose, normalize_scene_poses

# The scene loader reads the image size, crop and pose scale from a config (32 px, defaults otherwise).
CFG32 = config_from_dict({"model": {"image_tokenizer": {"image_size": 32, "patch_size": 8}}})

TOL = 1e-5


def random_scene(v=6, seed=0) -> SceneViews:
    images, c2w, fxfycxcy = random_views(1, v, 32, 24, seed=seed)
    return SceneViews(images[0], c2w[0], fxfycxcy[0], list(range(v)), "random")


def tiny(name: str):
    torch.manual_seed(0)
    return build_model(tiny_config(name).model).eval()


def full_render(model, scene: SceneViews, inputs: list[int], targets: list[int]) -> torch.Tensor:
    with torch.no_grad():
        out = model(scene.images[inputs][None], scene.c2w[inputs][None], scene.fxfycxcy[inputs][None],
                    scene.c2w[targets][None], scene.fxfycxcy[targets][None])
    return out[0]


def test_incremental_session_matches_full_forward():
    model, scene = tiny("efficient_lvsm"), random_scene()
    session = DemoSession(model, scene)
    targets = [1, 4]
    for k, view in enumerate([0, 2, 3, 5]):
        cost = session.add_view(view)
        assert cost.action == "add" and cost.view == view and cost.mode == "incremental"
        assert cost.num_inputs == k + 1 and cost.cache_bytes == session.cache.nbytes() > 0
        images, cost = session.render_views(targets)
        assert (images - full_render(model, scene, session.inputs, targets)).abs().max() < TOL
        assert cost.action == "render" and cost.num_targets == 2 and cost.wall_ms > 0
    bytes_before = session.cache.nbytes()
    cost = session.remove_view(2)
    assert session.inputs == [0, 3, 5] and session.cache.num_views == 3
    assert cost.cache_bytes == bytes_before * 3 // 4
    images, _ = session.render_views(targets)
    assert (images - full_render(model, scene, [0, 3, 5], targets)).abs().max() < TOL
    session.add_view(2)  # back, now last in the cache
    images, _ = session.render_views(targets)
    assert (images - full_render(model, scene, [0, 3, 5, 2], targets)).abs().max() < TOL
    assert [c.action for c in session.history] == ["add", "render"] * 4 + ["remove", "render", "add", "render"]
    rows = session.cost_table()
    assert len(rows) == 12 and {"wall_ms", "cache_bytes", "cache_mib", "mode"} <= set(rows[0])


def test_lvsm_falls_back_to_recompute():
    model, scene = tiny("lvsm_decoder_only"), random_scene()
    session = DemoSession(model, scene)
    costs = session.set_inputs([0, 3])
    assert [(c.action, c.view, c.mode, c.cache_bytes) for c in costs] == [("add", 0, "recompute", 0),
                                                                         ("add", 3, "recompute", 0)]
    images, cost = session.render_views([2])
    assert cost.mode == "recompute" and session.cache is None
    assert (images - full_render(model, scene, [0, 3], [2])).abs().max() < TOL
    session.set_inputs([3, 5])  # removes 0, adds 5
    assert session.inputs == [3, 5]
    images, _ = session.render_views([2])
    assert (images - full_render(model, scene, [3, 5], [2])).abs().max() < TOL


def test_trajectory_render_and_errors_name_the_view():
    session = DemoSession(tiny("efficient_lvsm"), random_scene())
    with pytest.raises(ValueError, match="no input views"):
        session.render_views([0])
    session.add_view(1)
    with pytest.raises(ValueError, match="view 1 is already an input"):
        session.add_view(1)
    with pytest.raises(ValueError, match="view 9 is not a candidate"):
        session.add_view(9)
    with pytest.raises(ValueError, match="view 4 is not an input"):
        session.remove_view(4)
    c2w, fxfycxcy = session.trajectory(5)
    images, cost = session.render(c2w, fxfycxcy)
    assert images.shape == (5, 3, 32, 24) and cost.num_targets == 5
    session.remove_view(1)
    with pytest.raises(ValueError, match="no input views"):
        session.render(c2w, fxfycxcy)


def test_scene_views_checks_shapes():
    images, c2w, fxfycxcy = random_views(1, 3)
    with pytest.raises(ValueError, match="scene 'bad'"):
        SceneViews(images[0], c2w[0, :2], fxfycxcy[0], [0, 1, 2], "bad")


def test_load_scene_normalizes_all_candidates_together(tmp_path):
    synthetic.generate(tmp_path, "rooms", 1, 0, frames=8, size=32, seed=0)
    list_file = tmp_path / "train" / "full_list.txt"
    scene = load_scene(CFG32, list_file, "rooms_00000", max_views=4)
    assert scene.frames == [0, 2, 5, 7] and scene.images.shape == (4, 3, 32, 32)
    raw = json.loads((tmp_path / "train" / "metadata" / "rooms_00000.json").read_text())
    w2c = torch.tensor([raw["frames"][i]["w2c"] for i in scene.frames], dtype=torch.float64)
    assert torch.allclose(scene.c2w, normalize_scene_poses(invert_pose(w2c)).float(), atol=1e-5)
    by_index = load_scene(CFG32, list_file, "0", frames=[0, 2, 5, 7])
    assert torch.equal(by_index.c2w, scene.c2w)
    with pytest.raises(ValueError, match="'nope' is not in"):
        load_scene(CFG32, list_file, "nope")
    session = DemoSession(tiny("efficient_lvsm"), scene)
    session.set_inputs([0, 3])
    images, _ = session.render_views([1])
    assert images.shape == (1, 3, 32, 32)


def test_app_parse_args_defaults_to_localhost_without_gradio():
    had_gradio = "gradio" in sys.modules
    import app

    args = app.parse_args(["--data", "list.txt"])
    assert args.host == "127.0.0.1" and args.port == 7860 and args.scene == "0" and args.checkpoint == "showcase"
    assert app.parse_args([]).data is None and not args.random_weights
    assert app.parse_args(["--data", "x", "--host", "0.0.0.0"]).host == "0.0.0.0"
    assert had_gradio or "gradio" not in sys.modules


def test_app_builds_its_ui_when_gradio_is_installed():
    gr = pytest.importorskip("gradio")
    import app

    session = DemoSession(tiny("efficient_lvsm"), random_scene())
    session.set_inputs([0, 2])
    assert isinstance(app.build_ui(session, gr, trajectory_frames=4), gr.Blocks)


def test_app_opens_on_the_shipped_model_and_its_held_out_scenes(tmp_path, monkeypatch):
    import app

    monkeypatch.setattr(app, "SCENES_DIR", tmp_path / "showcase_data")
    session = app.build_session(app.parse_args(["--device", "cpu"]))
    assert session.scene.name == "rooms_00000" and session.inputs == [0, session.scene.num_views // 2]
    assert (tmp_path / "showcase_data" / "test" / "full_list.txt").is_file()
    images, _ = session.render_views([1])
    assert images.shape == (1, 3, 32, 32)
    with pytest.raises(SystemExit, match="--data is needed"):
        app.build_session(app.parse_args(["--random_weights", "--config", str(ROOT / "configs" / "tiny.yaml")]))


def test_stream_session_streams_in_order_under_its_budget():
    from demo.session import StreamSession
    from model.stream import CacheBudget
    scene = random_scene(v=12)
    model = tiny("efficient_lvsm")
    session = StreamSession(model, scene, CacheBudget(max_views=3, policy="recent"), holdout=4)
    assert session.order == [0, 1, 2, 4, 5, 6, 8, 9, 10] and session.held_out == [3, 7, 11]
    rows = session.add_next(5)
    assert [r["view"] for r in rows] == [0, 1, 2, 4, 5] and rows[-1]["evicted"] == [1]
    assert session.held == [2, 4, 5]
    images, row = session.render_views([3])
    torch.testing.assert_close(images, full_render(model, scene, [2, 4, 5], [3]), rtol=0, atol=TOL)
    assert row["views_held"] == 3 and session.history[-1] is row
    session.add_next(100)  # to the end of the stream
    assert session.streamed == 9 and session.held == [8, 9, 10]
    session.restart(CacheBudget(select_views=2))
    assert session.streamed == 0 and session.history == []
    with pytest.raises(ValueError, match="stream at least one"):
        session.render_views([3])
    session.add_next(9)
    assert session.render_views([3])[1]["views_attended"] == 2


def test_app_builds_its_stream_ui_when_gradio_is_installed():
    gr = pytest.importorskip("gradio")
    import app
    from demo.session import StreamSession
    from model.stream import CacheBudget

    session = StreamSession(tiny("efficient_lvsm"), random_scene(v=8), CacheBudget(max_views=4, policy="coverage"))
    session.add_next(2)
    assert isinstance(app.build_stream_ui(session, gr), gr.Blocks)
