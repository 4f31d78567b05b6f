"""Download released checkpoints by name into the Hugging Face cache and print where they are.

    python scripts/download_checkpoint.py efficient_lvsm_res256 [NAME ...]
    python scripts/download_checkpoint.py --all
    python scripts/download_checkpoint.py --list

Then `python inference.py --checkpoint efficient_lvsm_res256 ...` (or app.py, scripts/render_photos.py,
scripts/pose_sensitivity.py with --checkpoint NAME) finds the file in the cache, offline too, and uses
the matching config preset. The cache is huggingface_hub's (HF_HOME / HF_HUB_CACHE).
"""

import argparse
import sys

from configs.released import RELEASED, ReleasedCheckpointError, resolve_checkpoint


def table() -> list[str]:
    lines = ["name | hub file | config | RealEstate10K PSNR / SSIM / LPIPS (authors)"]
    for name, r in RELEASED.items():
        numbers = " / ".join("-" if v is None else f"{v:g}" for v in (r.psnr, r.ssim, r.lpips))
        where = f"checkpoints/{r.filename} (in this repository)" if r.shipped else f"{r.repo}/{r.filename}"
        lines.append(f"{name} | {where} | configs/{r.config} | {numbers}")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help=f"released names: {', '.join(RELEASED)}")
    p.add_argument("--all", action="store_true", help="every released checkpoint")
    p.add_argument("--list", action="store_true", help="print the table and exit")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(table()))
        return 0
    names = list(RELEASED) if args.all else args.names
    if not names:
        p.error("name a released checkpoint, or pass --all or --list")
    status = 0
    for name in names:
        if name not in RELEASED:
            print(f"error: {name!r} is not a released name; released: {', '.join(RELEASED)}", file=sys.stderr)
            status = 1
            continue
        try:
            path, config = resolve_checkpoint(name)
        except ReleasedCheckpointError as err:
            print(f"error: {err}", file=sys.stderr)
            status = 1
            continue
        print(f"{name}: {path} (config {config})")
    return status


if __name__ == "__main__":
    sys.exit(main())
