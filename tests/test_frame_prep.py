"""Frames of any size are prepared exactly as the reference's preprocess_frames (Efficient-LVSM and
LVSM data/dataset_scene.py), whose arithmetic is re-derived here: width, crop, intrinsics, pixels."""

import numpy as np
import pytest
import torch
from PIL import Image

import photos.pipeline
from data.dataset_scene import load_view, prepared_size

# (w0, h0, image_size, patch): RealEstate10K's 640x360, portrait, odd sizes, sizes where truncating
# first and then rounding half to even differ from rounding the untruncated width (905x512 at 256:
# 452.5 -> 452 -> 56.5 -> 56 patches; 73x64 at 32: 36.5 -> 36 -> 4.5 -> 4), frames smaller than
# image_size (upsampled), patch 16.
SIZES = [(640, 360, 256, 8), (640, 360, 512, 16), (360, 640, 256, 8), (641, 359, 256, 8), (905, 512, 256, 8),
         (1023, 577, 256, 8), (73, 64, 32, 8), (64, 36, 32, 8), (36, 64, 32, 8), (61, 37, 32, 8),
         (20, 12, 32, 8), (12, 20, 32, 8), (33, 31, 32, 8), (44, 32, 32, 8), (35, 17, 32, 16)]


def reference_preprocess(img: Image.Image, fxfycxcy: list, resize_h: int, patch_size: int, square_crop: bool):
    """The reference's preprocess_frames for one frame, step by step."""
    original_image_w, original_image_h = img.size
    resize_w = int(resize_h / original_image_h * original_image_w)
    resize_w = int(round(resize_w / patch_size) * patch_size)
    image = img.resize((resize_w, resize_h), resample=Image.LANCZOS)
    start_h = start_w = 0
    if square_crop:
        min_size = min(resize_h, resize_w)
        start_h = (resize_h - min_size) // 2
        start_w = (resize_w - min_size) // 2
        image = image.crop((start_w, start_h, start_w + min_size, start_h + min_size))
    image = torch.from_numpy(np.array(image) / 255.0).permute(2, 0, 1).float()
    k = np.array(fxfycxcy, dtype=np.float64)
    rx, ry = resize_w / original_image_w, resize_h / original_image_h
    k *= (rx, ry, rx, ry)
    if square_crop:
        k[2] -= start_w
        k[3] -= start_h
    return image, torch.from_numpy(k).float(), resize_w, (start_w, start_h)


def _old_width(w0, h0, image_size, patch):
    """The width formula this project used before: rounding without truncating first."""
    return max(patch, int(round(image_size / h0 * w0 / patch)) * patch)


def test_the_list_holds_sizes_where_the_formulas_differ():
    differ = [s for s in SIZES if _old_width(*s) != int(round(int(s[2] / s[1] * s[0]) / s[3]) * s[3])]
    assert (905, 512, 256, 8) in differ and (73, 64, 32, 8) in differ


@pytest.mark.parametrize("square_crop", [True, False])
def test_prepared_size_is_the_reference_arithmetic(square_crop):
    for w0, h0, size, patch in SIZES:
        w = int(round(int(size / h0 * w0) / patch) * patch)
        side = min(w, size)
        final, resized, offset = prepared_size((w0, h0), size, patch, square_crop)
        assert resized == (w, size), (w0, h0)
        if square_crop:
            assert final == (side, side) and offset == ((w - side) // 2, (size - side) // 2), (w0, h0)
        else:
            assert final == (w, size) and offset == (0, 0), (w0, h0)
    assert prepared_size((640, 360), 256, 8, True) == ((256, 256), (456, 256), (100, 0))


@pytest.mark.parametrize("square_crop", [True, False])
def test_load_view_gives_the_reference_pixels_and_intrinsics(tmp_path, square_crop):
    rng = np.random.default_rng(0)
    for w0, h0, size, patch in SIZES:
        if size > 32:  # pixels at small sizes (speed); the arithmetic above covers the large ones
            continue
        img = Image.fromarray(rng.integers(0, 256, (h0, w0, 3), dtype=np.uint8))
        path = tmp_path / f"{w0}x{h0}.png"
        img.save(path)
        k0 = [0.9 * w0 + 0.123, 0.8 * h0 + 0.456, 0.5 * w0 + 0.7, 0.5 * h0 - 0.3]
        image, k = load_view(path, k0, size, patch, square_crop)
        ref_image, ref_k, _, _ = reference_preprocess(img, k0, size, patch, square_crop)
        assert image.shape == ref_image.shape and torch.equal(image, ref_image), (w0, h0)
        assert torch.equal(k, ref_k), (w0, h0, k, ref_k)


def test_too_narrow_a_frame_names_the_file(tmp_path):
    path = tmp_path / "sliver.png"
    Image.new("RGB", (2, 40)).save(path)  # 32 / 40 * 2 = 1.6 -> 1 pixel -> 0 patches: the reference's PIL fails
    with pytest.raises(ValueError, match="sliver.png.*width 0"):
        load_view(path, [1.0, 1.0, 1.0, 20.0], 32, 8, True)


def test_own_photos_prepare_frames_with_the_same_helper():
    assert photos.pipeline.prepared_size is prepared_size
