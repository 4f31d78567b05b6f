#!/usr/bin/env bash
# The reference's evaluation command, with our tools: RealEstate10K test scenes at pixelSplat's
# index (2 input views, 3 targets), 256 px square crop, PSNR / SSIM / LPIPS, HTML gallery.
# Settings by environment variable; extra key=value overrides are passed on:
#   CKPT=ckpt.pt CONFIG=configs/efficient_lvsm_256.yaml DATA=data/re10k/test/full_list.txt \
#   INDEX=data/evaluation_index_re10k.json OUT=experiments/evaluation/test NPROC=4 bash scripts/eval.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${CKPT:-ckpt/efficient_lvsm_256.pt}
CONFIG=${CONFIG:-configs/efficient_lvsm_256.yaml}
DATA=${DATA:-data/re10k/test/full_list.txt}
INDEX=${INDEX:-data/evaluation_index_re10k.json}
OUT=${OUT:-experiments/evaluation/test}
NPROC=${NPROC:-1}
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
"$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" inference.py --config "$CONFIG" \
  training.dataset_path="$DATA" training.batch_size_per_gpu=4 training.target_has_input=false \
  training.num_views=5 training.square_crop=true training.num_input_views=2 training.num_target_views=3 \
  inference.checkpoint_dir="$CKPT" \
  inference.view_idx_file_path="$INDEX" inference_out_dir="$OUT" "$@"
