"""Render a checkpoint on your own posed photos.

    python -m scripts.render_photos --checkpoint ckpt.pt --cameras CAMERAS --out OUT
        [--images DIR] [--format auto|colmap|transforms|json]
        [--convention opencv|opengl] [--pose c2w|w2c]
        [--inputs 0,2,img.png | --num_inputs N] [--targets 3,img7.png] [--target_cameras cams.json]
        [--video interpolate|spiral --frames 60] [--image_size H] [--square_crop | --no-square_crop]
        [--config cfg.yaml] [--device cuda] [--chunk 8] [--ignore_extra_images] [--ignore_camera_check]

CAMERAS: a COLMAP model folder, binary as COLMAP writes it by default (cameras.bin, images.bin) or
text (cameras.txt, images.txt; w2c, OpenCV axes; a project folder with sparse/0 works too), a nerfstudio /
instant-ngp transforms.json (c2w, OpenGL axes) or a plain JSON {"frames": [{"image", "c2w" | "w2c",
"fxfycxcy" | "K"}]} (OpenCV axes). --convention / --pose override the format's defaults (they also
apply to --target_cameras). Image names are relative to --images, else to the camera file's folder.

The cameras are checked before rendering: points matched between the input photos must lie on
their epipolar lines; when another reading of the file (--convention opencv|opengl, --pose c2w|w2c)
fits them clearly better, or the cameras look away from each other, it exits 1 naming the flags to
pass (--ignore_camera_check: warn and render anyway).

Writes OUT/inputs/, OUT/cameras.png (check: epipolar lines must pass through the marked points),
OUT/targets/ (render and ground truth of held-out --targets, PSNR in summary.json),
OUT/target_cameras/, OUT/video/ (frames; video.mp4 when a video writer is available), OUT/summary.json.
Exits 1 with a message naming the file and item at fault on bad input.
"""

import argparse
import sys
import warnings
from pathlib import Path

from data.camera_io import CONVENTIONS, FORMATS, POSES
from model import CheckpointError
from photos.pipeline import VIDEO_KINDS, PhotoOptions, render_photos


def parse_args(argv=None) -> PhotoOptions:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--cameras", required=True, help="COLMAP folder, transforms.json or plain JSON")
    p.add_argument("--out", required=True)
    p.add_argument("--images", help="folder the image names are relative to")
    p.add_argument("--format", default="auto", choices=FORMATS)
    p.add_argument("--convention", choices=CONVENTIONS, help="camera axes (default: the format's)")
    p.add_argument("--pose", choices=POSES, help="whether matrices are c2w or w2c (default: the format's)")
    p.add_argument("--config", help="YAML config (default: the one stored in the checkpoint)")
    p.add_argument("--inputs", help="comma-separated indices or image names (default: all non-targets)")
    p.add_argument("--num_inputs", type=int, help="use the first N default inputs")
    p.add_argument("--targets", help="posed images to hold out and render, with PSNR")
    p.add_argument("--target_cameras", help="JSON of cameras to render (plain or transforms.json)")
    p.add_argument("--video", choices=VIDEO_KINDS, help="render a camera path through / around the inputs")
    p.add_argument("--frames", type=int, default=60, help="video frames")
    p.add_argument("--image_size", type=int, help="image height (default: the checkpoint's)")
    p.add_argument("--square_crop", action=argparse.BooleanOptionalAction, default=None,
                   help="centre-crop to a square (default: as the checkpoint was trained)")
    p.add_argument("--device", help="default: cuda if available, else cpu")
    p.add_argument("--chunk", type=int, default=8, help="target views per forward")
    p.add_argument("--ignore_extra_images", action="store_true", help="warn, not fail, on images without a camera")
    p.add_argument("--ignore_camera_check", action="store_true",
                   help="warn, not fail, on an implausible layout or a convention the photos contradict")
    return PhotoOptions(**vars(p.parse_args(argv)))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv=None) -> int:
    options = parse_args(argv)
    warnings.showwarning = _show_warning  # one line per warning, no source location
    try:
        summary = render_photos(options)
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for row in summary.get("targets", []):
        print(f"{row['name']}: PSNR {row['psnr']:.2f} dB")
    print(f"wrote {options.out} ({len(summary['inputs'])} inputs"
          + (f", video {summary['video']['path'] or 'frames'}" if "video" in summary else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
