#!/usr/bin/env bash
# LOGAN noise-level tuning on one node with N GPUs: each rank takes a shard of the images, rank 0
# merges the shards and selects the optimal std. Rerun the same command after a pre-emption.
#   bash scripts/tune_one_node.sh 4 /models/llava-1.5-7b-hf members.json nonmembers.json runs/tune
set -euo pipefail
GPUS=${1:-8}; MODEL=$2; MEMBERS=$3; NONMEMBERS=$4; OUT=$5
torchrun --standalone --nproc-per-node="$GPUS" -m logan.cli tune \
    target_model=llava-hf target_model.model_path="$MODEL" \
    data.member_dataset="$MEMBERS" data.nonmember_dataset="$NONMEMBERS" \
    path.output_dir="$OUT"
