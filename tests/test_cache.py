"""The scene cache renders exactly what the full model renders from the same views."""

import pytest
import torch

from model import build_model
from tests.conftest import random_views, tiny_config

TOL = 1e-5


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_config("efficient_lvsm").model).eval()


@pytest.mark.parametrize("b", [1, 3])
def test_adding_views_one_at_a_time_equals_full_render(model, b):
    images, c2w, fx = random_views(b, 7, 32, 24, seed=b)
    inputs, targets = (images[:, :5], c2w[:, :5], fx[:, :5]), (c2w[:, 5:], fx[:, 5:])
    with torch.no_grad():
        cache = None
        for k in range(5):
            cache = model.encode(*(x[:, k:k + 1] for x in inputs), cache=cache)
            full = model(*(x[:, :k + 1] for x in inputs), *targets)
            assert (model.render(cache, *targets) - full).abs().max() < TOL
    assert cache.num_views == 5 and cache.view_ids == [0, 1, 2, 3, 4]


def test_adding_several_at_a_time(model):
    images, c2w, fx = random_views(2, 8, seed=3)
    inputs, targets = (images[:, :6], c2w[:, :6], fx[:, :6]), (c2w[:, 6:], fx[:, 6:])
    with torch.no_grad():
        cache = model.encode(*(x[:, :2] for x in inputs))
        cache = model.encode(*(x[:, 2:5] for x in inputs), cache=cache)
        cache = model.encode(*(x[:, 5:] for x in inputs), cache=cache)
        assert (model.render(cache, *targets) - model(*inputs, *targets)).abs().max() < TOL


@pytest.mark.parametrize("b", [1, 2])
def test_removing_a_view_equals_full_render_without_it(model, b):
    images, c2w, fx = random_views(b, 6, seed=5)
    inputs, targets = (images[:, :4], c2w[:, :4], fx[:, :4]), (c2w[:, 4:], fx[:, 4:])
    with torch.no_grad():
        cache = None
        for k in range(4):
            cache = model.encode(*(x[:, k:k + 1] for x in inputs), cache=cache)
        cache.remove(1)
        keep = [0, 2, 3]
        assert (model.render(cache, *targets) - model(*(x[:, keep] for x in inputs), *targets)).abs().max() < TOL
        cache.remove(3)
        cache = model.encode(*(x[:, 1:2] for x in inputs), cache=cache)  # re-added view goes last
        assert cache.view_ids == [0, 2, 4]
        order = [0, 2, 1]
        assert (model.render(cache, *targets) - model(*(x[:, order] for x in inputs), *targets)).abs().max() < TOL


def test_memory_grows_linearly_and_encoder_runs_on_new_views_only(model):
    images, c2w, fx = random_views(1, 9, seed=7)
    calls = []
    hook = model.input_self_attn_blocks[0].register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        with torch.no_grad():
            cache = model.encode(images[:, :1], c2w[:, :1], fx[:, :1])
            sizes = [cache.nbytes()]
            for k in range(1, 8):
                cache = model.encode(images[:, k:k + 1], c2w[:, k:k + 1], fx[:, k:k + 1], cache=cache)
                sizes.append(cache.nbytes())
    finally:
        hook.remove()
    assert calls == [1] * 8  # one view through the encoder per add, never the old ones
    assert sizes == [sizes[0] * (k + 1) for k in range(8)]
    assert cache.capacity <= 2 * cache.num_views


def test_cache_errors(model):
    images, c2w, fx = random_views(2, 3, seed=9)
    with torch.no_grad():
        cache = model.encode(images[:, :1], c2w[:, :1], fx[:, :1])
        with pytest.raises(KeyError, match="view id 5 is not in the cache"):
            cache.remove(5)
        with pytest.raises(ValueError, match="batch size 1, the cache 2"):
            model.encode(images[:1, 1:2], c2w[:1, 1:2], fx[:1, 1:2], cache=cache)
        big = random_views(2, 1, 40, 32)
        with pytest.raises(ValueError, match="new views are 40x32 but the cache holds 32x32"):
            model.encode(*big, cache=cache)
        cache.remove(0)
        with pytest.raises(ValueError, match="holds no input views"):
            model.render(cache, c2w[:, 2:], fx[:, 2:])


@pytest.mark.parametrize("name", ["lvsm_decoder_only", "lvsm_encoder_decoder"])
def test_lvsm_answers_encode_and_render_like_its_forward(name):
    """The baselines hold their input views and recompute: the same calls, the same images."""
    model = build_model(tiny_config(name).model).eval()
    images, c2w, fx = random_views(2, 6, seed=4)
    inputs, targets = (images[:, :4], c2w[:, :4], fx[:, :4]), (c2w[:, 4:], fx[:, 4:])
    with torch.no_grad():
        full = model(*inputs, *targets)
        cache = None
        for k in range(4):  # one view at a time, as the incremental path adds them
            cache = model.encode(*(x[:, k:k + 1] for x in inputs), cache=cache)
        assert cache.view_ids == [0, 1, 2, 3] and cache.nbytes() == 0 and not model.incremental
        assert torch.equal(model.render(cache, *targets), full)
        cache.remove(1)
        kept = [0, 2, 3]
        assert torch.equal(model.render(cache, *targets), model(*(x[:, kept] for x in inputs), *targets))
        with pytest.raises(KeyError, match="view id 1"):
            cache.remove(1)


@pytest.mark.parametrize("name", ["efficient_lvsm", "lvsm_decoder_only"])
def test_render_scene_in_chunks_equals_one_call(name):
    from model.render import render_scene
    model = build_model(tiny_config(name).model).eval()
    images, c2w, fx = random_views(1, 7, seed=5)
    with torch.no_grad():
        full = model(images[:, :2], c2w[:, :2], fx[:, :2], c2w[:, 2:], fx[:, 2:])
        chunked = render_scene(model, images[:, :2], c2w[:, :2], fx[:, :2], c2w[:, 2:], fx[:, 2:], chunk=2,
                               one_view_at_a_time=True)
    assert chunked.shape == full.shape and chunked.dtype == torch.float32
    assert (chunked - full).abs().max() < TOL
