#!/usr/bin/env bash
# The paper's ImageNet runs: `hf-decomp analyze` over ILSVRC/imagenet-1k streamed from the Hub, one
# model after the other (the depth study's list), under `accelerate launch`.
#
#   huggingface-cli login                      # imagenet-1k is gated: accept its terms on the Hub first
#   scripts/imagenet_analyze.sh                # all models, one machine with 8 GPUs
#   scripts/imagenet_analyze.sh resnet50 resnet152
#   CONFIG=scripts/accelerate_configs/two_nodes.yaml MACHINE_RANK=1 scripts/imagenet_analyze.sh   # on node 1
#   DRY_RUN=1 scripts/imagenet_analyze.sh resnet50                                               # print only
#
# Every run checkpoints every CHECKPOINT_MINUTES and is started with --resume, so after a crash or a
# preemption the same command continues where it stopped; models whose results exist are skipped.
# k1 = K1_RATIO * d (d = the model's feature width), k2 = K2 features per class, as in the paper.
set -euo pipefail

CONFIG=${CONFIG:-scripts/accelerate_configs/single_node_8gpu.yaml}
OUT=${OUT:-runs/imagenet}
DATASET=${DATASET:-ILSVRC/imagenet-1k}
K1_RATIO=${K1_RATIO:-0.05}
K2=${K2:-50}
BATCH_SIZE=${BATCH_SIZE:-256}
NUM_WORKERS=${NUM_WORKERS:-8}
CHECKPOINT_MINUTES=${CHECKPOINT_MINUTES:-10}
MIXED_PRECISION=${MIXED_PRECISION:-bf16}
EXTRA_ARGS=${EXTRA_ARGS:-}
PYTHON=${PYTHON:-python}

if [ "$#" -gt 0 ]; then
  MODELS=("$@")
else
  MODELS=(resnet50 resnet101 resnet152 wide_resnet50_2 wide_resnet101_2 densenet121 densenet169 densenet161
          densenet201 efficientnet_b0 efficientnet_b1 efficientnet_b2 efficientnet_b3)
fi

launch=(accelerate launch --config_file "$CONFIG")
if [ -n "${MACHINE_RANK:-}" ]; then
  launch+=(--machine_rank "$MACHINE_RANK")
fi

for model in "${MODELS[@]}"; do
  out="$OUT/$model"
  if [ -f "$out/metrics.json" ]; then
    echo "skip $model: $out/metrics.json exists"
    continue
  fi
  # k1 from the feature width d of the architecture (no weights needed to know d)
  k1=$("$PYTHON" -c "import timm; d = timm.create_model('$model', pretrained=False).num_features; print(max(1, round($K1_RATIO * d)))")
  command=("${launch[@]}" -m hf_decomp analyze
           --model "timm:$model" --dataset "$DATASET" --streaming
           --stats-split train --eval-split validation --k1 "$k1" --k2 "$K2"
           --batch-size "$BATCH_SIZE" --num-workers "$NUM_WORKERS"
           --mixed-precision "$MIXED_PRECISION" --channels-last
           --save-every-minutes "$CHECKPOINT_MINUTES" --resume --out "$out")
  # shellcheck disable=SC2206  # EXTRA_ARGS is meant to be split into words
  command+=($EXTRA_ARGS)
  echo "${command[*]}"
  if [ -z "${DRY_RUN:-}" ]; then
    "${command[@]}"
  fi
done
