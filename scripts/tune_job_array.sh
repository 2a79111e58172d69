#!/usr/bin/env bash
# LOGAN noise-level tuning as a SLURM job array of single-GPU jobs (no process group): shard i of N per
# task, then a dependent job merges the shards and selects the optimal std (the last shard to finish
# also merges by itself; the merge job makes sure it happens even if shards finish out of order).
# A failed or pre-empted task is simply resubmitted: shards are resumable one by one.
#   bash scripts/tune_job_array.sh 16 /models/llava-1.5-7b-hf members.json nonmembers.json /shared/runs/tune
set -euo pipefail
SHARDS=${1:-16}; MODEL=$2; MEMBERS=$3; NONMEMBERS=$4; OUT=$5
ARRAY=$(sbatch --parsable --job-name=logan-shard --array=0-$((SHARDS - 1)) --gpus=1 --time=04:00:00 \
    --output="logs/%x_%A_%a.out" --wrap="logan tune target_model=llava-hf target_model.model_path=$MODEL \
    data.member_dataset=$MEMBERS data.nonmember_dataset=$NONMEMBERS path.output_dir=$OUT \
    data.num_shards=$SHARDS data.shard_id=\$SLURM_ARRAY_TASK_ID")
sbatch --job-name=logan-merge --dependency=afterok:"$ARRAY" --time=00:30:00 --output="logs/%x_%j.out" \
    --wrap="logan merge path.output_dir=$OUT"
echo "submitted array $ARRAY and its merge job"
