"""Write an evaluation index (pixelSplat format) for other view counts and frame gaps.

    python -m scripts.make_eval_index LIST_FILE OUT.json --context_gap 45 --num_targets 3 --seed 0

For each scene of the list: two context frames `context_gap` apart (start drawn with the seed) and
`num_targets` distinct target frames strictly between them; scenes too short get `null`, as in
the papers' file. Deterministic for a given seed and list.
"""

import argparse
import json
import random
import sys
from pathlib import Path

from data.scene_format import read_scene_json, read_scene_list


def make_index(list_file, context_gap: int, num_targets: int, seed: int) -> dict:
    if context_gap < num_targets + 1:
        raise ValueError(f"--context_gap {context_gap} leaves no room for {num_targets} targets between contexts")
    index = {}
    for path in read_scene_list(list_file):
        scene = read_scene_json(path)
        n = len(scene["frames"])
        rng = random.Random(f"{seed}/{scene['scene_name']}")  # per scene: stable if the list changes
        if n <= context_gap:
            index[scene["scene_name"]] = None
            continue
        start = rng.randrange(n - context_gap)
        targets = sorted(rng.sample(range(start + 1, start + context_gap), num_targets))
        index[scene["scene_name"]] = {"context": [start, start + context_gap], "target": targets}
    return index


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("list_file", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--context_gap", type=int, default=45)
    parser.add_argument("--num_targets", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    index = make_index(args.list_file, args.context_gap, args.num_targets, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(index, indent=1))
    nulls = sum(v is None for v in index.values())
    print(f"wrote {args.out}: {len(index)} scenes, {len(index) - nulls} with views, {nulls} too short (null)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
