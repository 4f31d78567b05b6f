#!/usr/bin/env bash
# The authors' training command (Efficient-LVSM scripts/train.sh), with our tools: Efficient-LVSM,
# 6 + 6 layers, 2 input + 6 target views, 2 scenes per GPU, REPA to a DINOv3 teacher (teacher
# block 8 -> our block 2), 100 epochs cut at 24 hours, checkpoints every 5 epochs and every hour.
# Settings by environment variable; extra key=value overrides are passed on:
#   EXP=my_run NPROC=2 DATA=data/re10k/train/full_list.txt TEACHER=pretrained/dinov3-vitb16 bash scripts/train.sh
# (NNODES, NODE_RANK and MASTER, below, make it a multi-node run.)
# TEACHER is a transformers folder (save_pretrained of facebook/dinov3-vitb16-pretrain-lvd1689m);
# REPA=false trains without it. The VGG-19 of the perceptual loss is read from
# ./metric_checkpoint/imagenet-vgg-verydeep-19.mat, or training.perceptual_weights_path=FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
EXP=${EXP:-your_name}
NPROC=${NPROC:-2}
CONFIG=${CONFIG:-configs/efficient_lvsm_256.yaml}
DATA=${DATA:-data/re10k/train/full_list.txt}
TEACHER=${TEACHER:-pretrained/dinov3-vitb16}
REPA=${REPA:-true}
PY=${PY:-.venv/bin/python}  # the Python that runs torchrun
[ -x "$PY" ] || PY=python3
# Several nodes: run this on every node with NNODES, NODE_RANK (0 on the first node) and MASTER, the first
# node's host:port as the other nodes reach it (not localhost), e.g.
#   NNODES=2 NODE_RANK=0 MASTER=node001:29500 NPROC=8 bash scripts/train.sh   # on node001
#   NNODES=2 NODE_RANK=1 MASTER=node001:29500 NPROC=8 bash scripts/train.sh   # on the second node
NNODES=${NNODES:-}
NODE_RANK=${NODE_RANK:-}
MASTER=${MASTER:-}
if [ -n "$NNODES$NODE_RANK$MASTER" ]; then
  if [ -z "$NNODES" ] || [ -z "$NODE_RANK" ] || [ -z "$MASTER" ]; then
    echo "error: a multi-node run needs NNODES, NODE_RANK and MASTER (first node's host:port); got" \
      "NNODES='$NNODES' NODE_RANK='$NODE_RANK' MASTER='$MASTER'" >&2
    exit 2
  fi
  LAUNCH=(--nnodes "$NNODES" --node_rank "$NODE_RANK" --rdzv_backend c10d --rdzv_endpoint "$MASTER")
else
  LAUNCH=(--standalone)
fi
"$PY" -m torch.distributed.run "${LAUNCH[@]}" --nproc_per_node "$NPROC" train.py --config "$CONFIG" \
  training.dataset_path="$DATA" training.wandb_exp_name="$EXP" training.checkpoint_dir="./experiments/checkpoints/$EXP" \
  model.image_tokenizer.type=dinov3 model.image_tokenizer.model_path="$TEACHER" training.enable_repa="$REPA" \
  model.repa_config=8-2 training.use_compile=true training.batch_size_per_gpu=2 model.transformer.n_layer=6 \
  training.checkpoint_every_epoch=5 training.train_epochs=100 training.train_time=24 \
  training.checkpoint_every_time=1 training.num_input_views=2 training.num_target_views=6 "$@"
