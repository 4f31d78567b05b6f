"""Check a converted dataset before training on it.

    python -m scripts.verify_data OUT/train/full_list.txt [--num_views 8] [--min_frame_dist 25]
                                  [--check_images all|first|none]

For every scene in the list: the JSON parses and has its keys, there are enough frames for the
training sampler (at least num_views, more than min_frame_dist), every fxfycxcy is finite with
positive focal lengths, every w2c is finite and rigid, and the image files exist and open.
Prints a summary and each scene at fault with its first problem; exits 1 if any is at fault.
"""

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from data.scene_format import check_scene, read_scene_list


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("list_file", help="scene list, e.g. OUT/train/full_list.txt")
    # Defaults follow the reference training config: 8 views drawn at least 25 frames apart.
    parser.add_argument("--num_views", type=int, default=8)
    parser.add_argument("--min_frame_dist", type=int, default=25)
    parser.add_argument("--check_images", default="all", choices=("all", "first", "none"))
    args = parser.parse_args(argv)

    try:
        scenes = read_scene_list(args.list_file)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    faults = []
    for json_path in tqdm(scenes, desc="verifying", unit="scene", disable=len(scenes) < 100):
        problem = check_scene(json_path, args.num_views, args.min_frame_dist, args.check_images)
        if problem is not None:
            faults.append((json_path, problem))

    print(f"{args.list_file}: {len(scenes) - len(faults)} scenes ok, {len(faults)} at fault")
    for json_path, problem in faults:
        print(f"  {json_path}: {problem}")
    return 1 if faults else 0


if __name__ == "__main__":
    sys.exit(main())
