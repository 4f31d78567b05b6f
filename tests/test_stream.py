"""Long streams (model/stream.py, model/cache.py): which views each policy keeps, memory flat under a
budget, per-render selection of the nearest views, and the cache's storage precisions."""

import pytest
import torch

from model import build_model
from model.cache import SceneCache
from model.stream import CacheBudget, StreamingScene, attention_mass, camera_distance
from tests.conftest import random_views, tiny_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_config("efficient_lvsm", image_size=32).model).eval()


def line_cameras(xs, turn=None):
    """c2w [v, 4, 4]: cameras at (x, 0, 0) looking down +z (turned about y by `turn` radians each)."""
    c2w = torch.eye(4).repeat(len(xs), 1, 1)
    for i, x in enumerate(xs):
        c2w[i, 0, 3] = x
        if turn is not None:
            a = torch.tensor(turn[i])
            c2w[i, :3, :3] = torch.tensor([[a.cos(), 0, a.sin()], [0, 1, 0], [-a.sin(), 0, a.cos()]])
    return c2w


def stream_of(model, budget, c2w, seed=0):
    images, _, fx = random_views(1, len(c2w), 32, 32, seed=seed)
    scene = StreamingScene(model, budget)
    for i in range(len(c2w)):
        scene.add(images[0, i], c2w[i], fx[0, i])
    return scene, images[0], fx[0]


def test_budget_checks():
    with pytest.raises(ValueError, match="'all' keeps every view"):
        CacheBudget(max_views=4)
    with pytest.raises(ValueError, match="needs max_views"):
        CacheBudget(policy="recent")
    with pytest.raises(ValueError, match="not one of"):
        CacheBudget(policy="lru", max_views=3)
    with pytest.raises(ValueError, match="sink_views"):
        CacheBudget(policy="sink_recent", max_views=2, sink_views=2)
    with pytest.raises(ValueError, match="storage"):
        CacheBudget(storage="int4")


def test_recent_and_sink_recent_keep_the_right_views(model):
    c2w = line_cameras([0.1 * i for i in range(7)])
    scene, *_ = stream_of(model, CacheBudget(max_views=3, policy="recent"), c2w)
    assert scene.view_ids == [4, 5, 6] and scene.evicted == [0, 1, 2, 3]
    scene, *_ = stream_of(model, CacheBudget(max_views=3, policy="sink_recent", sink_views=1), c2w)
    assert scene.view_ids == [0, 5, 6]


def test_coverage_drops_the_redundant_view(model):
    # 0 and 1 nearly coincide; 2 and 3 are far apart: one of the pair goes, the spread cameras stay
    scene, *_ = stream_of(model, CacheBudget(max_views=3, policy="coverage"), line_cameras([0.0, 0.01, 5.0, 10.0]))
    assert scene.view_ids in ([0, 2, 3], [1, 2, 3])
    # the same place seen in another direction is not redundant: the duplicate camera goes instead
    c2w = line_cameras([0.0, 0.0, 0.0, 5.0], turn=[0.0, 3.1, 0.0, 0.0])
    scene, *_ = stream_of(model, CacheBudget(max_views=3, policy="coverage"), c2w)
    assert 1 in scene.view_ids and 3 in scene.view_ids and len({0, 2} & set(scene.view_ids)) == 1


def test_attention_evicts_the_least_attended(model):
    c2w = line_cameras([0.2 * i for i in range(5)])
    images, _, fx = random_views(1, 5, 32, 32, seed=3)
    full = model.encode(images, c2w[None], fx)
    probes = [3, 4]
    render, mass = attention_mass(model, full, c2w[None, probes], fx[:, probes])
    assert mass.sum().item() == pytest.approx(1.0, abs=1e-6) and (mass > 0).all()
    torch.testing.assert_close(render, model.render(full, c2w[None, probes], fx[:, probes]))
    scene = StreamingScene(model, CacheBudget(max_views=4, policy="attention", probe_views=2))
    for i in range(5):
        out = scene.add(images[0, i], c2w[i], fx[0, i])
    expected = int(torch.argmin(mass[:4]))  # the first probe render scores all; the newest (4) stays
    assert out["evicted"] == [expected] and expected not in scene.view_ids and 4 in scene.view_ids
    # scores add up over renders: a view the stream's renders keep attending to outlives one they do not
    before = dict(scene.attention)
    _, shares = attention_mass(model, scene.cache, c2w[None, [0]], fx[:, [0]])
    scene.render(c2w[[0]], fx[0, [0]])
    for (view_id, score), share in zip(before.items(), shares.tolist()):
        assert scene.attention[view_id] == pytest.approx(score + share, abs=1e-9)


def test_memory_stays_flat_under_a_budget(model):
    c2w = line_cameras([0.05 * i for i in range(40)])
    scene, *_ = stream_of(model, CacheBudget(max_views=4, policy="recent"), c2w)
    sizes = []
    images, _, fx = random_views(1, 5, 32, 32, seed=9)
    for i in range(5):
        sizes.append(scene.add(images[0, i], c2w[i], fx[0, i])["bytes"])
    assert len(set(sizes)) == 1 and scene.cache.num_views == 4 and scene.cache.capacity <= 8


def test_selection_attends_to_the_nearest_views(model):
    xs = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    c2w = line_cameras(xs)
    scene, images, fx = stream_of(model, CacheBudget(select_views=2), c2w, seed=4)
    target = line_cameras([3.9])
    assert scene.nearest(target, 2) == [3, 4]
    assert scene.nearest(line_cameras([0.2, 4.8]), 2) == [0, 5]  # one per target first
    rendered, info = scene.render(target, fx[:1])
    assert info["views"] == 2
    direct = model.render(model.encode(images[None, [3, 4]], c2w[None, [3, 4]], fx[None, [3, 4]]), target[None], fx[None, :1])
    torch.testing.assert_close(rendered, direct[0], rtol=0, atol=1e-6)
    scene.remove(4)  # a held view dropped by hand: selection picks among the others
    assert scene.nearest(target, 2) == [3, 5] and scene.view_ids == [0, 1, 2, 3, 5]
    with pytest.raises(KeyError):
        scene.remove(4)
    scene, images, fx = stream_of(model, CacheBudget(select_views=2), c2w, seed=4)
    ids = sorted(scene.nearest(target, 4))
    d = camera_distance(target.double(), c2w.double(), 1.0, 1.0)[0]
    assert ids == sorted(torch.argsort(d)[:4].tolist())


@pytest.mark.parametrize("storage,tol,ratio", [("bf16", 2e-2, 0.5), ("fp16", 2e-3, 0.5), ("int8", 3e-2, 0.3)])
def test_storage_precisions(model, storage, tol, ratio):
    images, c2w, fx = random_views(1, 5, 32, 32, seed=5)
    native = model.encode(images[:, :4], c2w[:, :4], fx[:, :4])
    stored = SceneCache.from_layers(native.keys, native.values, native.tokens_per_view, native.image_size, storage)
    reference = model.render(native, c2w[:, 4:], fx[:, 4:])
    out = model.render(stored, c2w[:, 4:], fx[:, 4:])
    error = (out - reference).abs().max().item()
    assert 0 < error < tol and stored.layer(0)[0].dtype == native.layer(0)[0].dtype
    assert stored.nbytes() <= ratio * native.nbytes()
    # appending and removing views: quantized per view, so the same as a cache built without them
    stored.remove(1)
    model.encode(images[:, 4:], c2w[:, 4:], fx[:, 4:], stored)
    rebuilt = model.encode(images[:, [0, 2, 3, 4]], c2w[:, [0, 2, 3, 4]], fx[:, [0, 2, 3, 4]])
    rebuilt = SceneCache.from_layers(rebuilt.keys, rebuilt.values, rebuilt.tokens_per_view, rebuilt.image_size, storage)
    for i in range(len(stored.keys)):
        for a, b in zip(stored.layer(i), rebuilt.layer(i)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_subset_is_a_cache_of_those_views(model):
    images, c2w, fx = random_views(1, 5, 32, 32, seed=6)
    cache = model.encode(images[:, :4], c2w[:, :4], fx[:, :4])
    sub = cache.subset([3, 1])
    direct = model.encode(images[:, [3, 1]], c2w[:, [3, 1]], fx[:, [3, 1]])
    for i in range(len(cache.keys)):
        for a, b in zip(sub.layer(i), direct.layer(i)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    with pytest.raises(KeyError):
        cache.subset([7])


def test_stream_replay_writes_its_tables(tmp_path, model):
    """scripts/stream_replay.py end to end on a generated walk: every configuration scored at each point,
    the summary against the unbounded cache, the plots; --flat costs."""
    import csv

    pytest.importorskip("matplotlib")
    from configs.schema import config_from_dict
    from scripts.stream_replay import main
    from utils.config import to_dict
    cfg = config_from_dict({"model": to_dict(tiny_config("efficient_lvsm", image_size=32).model)})
    torch.save({"model": model.state_dict(), "config": to_dict(cfg)}, tmp_path / "tiny.pt")
    common = ["--checkpoint", str(tmp_path / "tiny.pt"), "--walks_dir", str(tmp_path / "walks"), "--frames", "30",
              "--every", "8", "--norm_frames", "4"]
    summary = main(common + ["--num_scenes", "1", "--policies", "recent,coverage", "--budgets", "4", "--select", "4",
                             "--storages", "int8", "--out", str(tmp_path / "out")])
    assert [s["config"] for s in summary] == ["all", "recent@4", "coverage@4", "select@4", "storage=int8"]
    assert summary[0]["vs_all_db"] == 0 and summary[0]["views_added"] == 24  # 30 frames, every 5th held out
    by = {s["config"]: s for s in summary}
    assert by["recent@4"]["memory_vs_all"] == pytest.approx(4 / 24) and by["select@4"]["attended"] == 4
    steps = list(csv.DictReader(open(tmp_path / "out" / "stream_steps.csv")))
    assert [int(r["views_added"]) for r in steps if r["config"] == "all"] == [8, 16, 24]
    assert (tmp_path / "out" / "stream_budget.png").is_file()
    rows = main(common + ["--flat", "16", "--flat_budget", "4", "--out", str(tmp_path / "out")])
    assert {(r["config"], r["views_held"]) for r in rows if r["views_added"] == 16} == {("all", 16), ("recent@4", 4),
                                                                                         ("select@4", 16)}
    assert (tmp_path / "out" / "stream_cost.png").is_file()
