"""Pose sensitivity diagnostic: do a checkpoint's renders follow the target camera?

    python -m scripts.pose_sensitivity --checkpoint ckpt.pt --data data/test/full_list.txt --scene 0 \
        --out experiments/pose_check [--config cfg.yaml] [--input_frames 0 16] [--steps 4] \
        [--max_angle_deg 10] [--max_shift 0.1]

Renders at each input camera (should reproduce that input) and along two small camera sweeps from
one input camera (rotation about its y axis, shift along its x axis). Writes OUT/pose_check.json,
OUT/inputs_vs_renders.png and OUT/sweep_rotate_y.png / sweep_shift_x.png, and prints a summary with
verdicts (see evaluation/pose_check.py). Exit status 1 when a check fails, so scripts can gate on it.
"""

import argparse
import sys
from pathlib import Path

from data.scene_format import read_scene_json
from demo.session import find_scene, load_scene
from evaluation.checkpoint import load_model
from evaluation.pose_check import (MIN_INPUT_PSNR, SMOOTH_FACTOR, STATIC_TOL, run_pose_check, summary_lines,
                                   write_outputs)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="model checkpoint (ours or the reference's)")
    p.add_argument("--config", default=None, help="YAML config; default: the one the checkpoint holds")
    p.add_argument("--data", required=True, help="scene list file (full_list.txt)")
    p.add_argument("--scene", default="0", help="scene name (JSON file stem) or index in the list")
    p.add_argument("--input_frames", type=int, nargs="+", default=None,
                   help="frames of the scene used as inputs (default: the first and the middle frame)")
    p.add_argument("--sweep_view", type=int, default=0, help="which input view the sweeps start from")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--steps", type=int, default=4, help="sweep frames on each side of the camera")
    p.add_argument("--max_angle_deg", type=float, default=10.0, help="largest rotation about the camera's y axis")
    p.add_argument("--max_shift", type=float, default=0.1,
                   help="largest shift along the camera's x axis, in normalized scene units (scenes span about +-0.74)")
    p.add_argument("--smooth_factor", type=float, default=SMOOTH_FACTOR, help="jump if a step > this x the median step")
    p.add_argument("--static_tol", type=float, default=STATIC_TOL, help="static if every frame stays this close")
    p.add_argument("--min_input_psnr", type=float, default=MIN_INPUT_PSNR, help="dB at the input cameras")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    model, cfg, _ = load_model(args.checkpoint, args.config, args.device)
    frames = args.input_frames
    if frames is None:  # the first and the middle frame, as the synthetic evaluation index spaces its context
        num_frames = len(read_scene_json(find_scene(args.data, args.scene)[1])["frames"])
        frames = sorted({0, num_frames // 2})
    scene = load_scene(cfg, args.data, args.scene, frames=frames)
    report, pictures = run_pose_check(model, scene.images, scene.c2w, scene.fxfycxcy, sweep_view=args.sweep_view,
                                      steps=args.steps, max_angle_deg=args.max_angle_deg, max_shift=args.max_shift,
                                      static_tol=args.static_tol, smooth_factor=args.smooth_factor,
                                      min_input_psnr=args.min_input_psnr)
    report.update(checkpoint=str(args.checkpoint), scene=scene.name, input_frames=scene.frames)
    paths = write_outputs(args.out, report, pictures)
    print(f"scene {scene.name}, input frames {scene.frames}")
    print("\n".join(summary_lines(report)))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
