#!/usr/bin/env bash
# The superpixel controls' training runs (docs/results/superpixels.md), in the
# order they were started. Each finished run's records (metrics.jsonl,
# selections, config.json) are copied to docs/results/superpixels/<name>/ and
# its times appended to times.txt. Rerunning resumes every run where it stopped.
#   bash docs/results/superpixels/commands.sh [STEP ...]   (default: every step)
set -euo pipefail
cd "$(dirname "$0")/../../.."
W=workdir/superpixels
OUT=docs/results/superpixels

source docs/results/runs.sh

step() {
  case $1 in
    oracle) run oracle --flagfile=configs/bench/superpixel_oracle.flags ;;
    whole) run whole --flagfile=configs/bench/superpixel_whole.flags ;;
    image) run image --flagfile=configs/bench/image.flags --al_strategies=random,mc_variance ;;
    superpixel) run superpixel --flagfile=configs/bench/superpixel.flags --al_strategies=mc_variance ;;
    dense_image) run dense_image --flagfile=configs/bench/dense_image.flags ;;
    dense_superpixel) run dense_superpixel --flagfile=configs/bench/dense_superpixel.flags ;;
    more_superpixel) run more_superpixel --flagfile=configs/bench/superpixel.flags --al_strategies=mc_variance \
        --train_min_steps=2000 ;;
    more_whole) run more_whole --flagfile=configs/bench/superpixel_whole.flags --al_strategies=mc_variance \
        --train_min_steps=2000 ;;
    *) echo "unknown step $1" >&2; exit 2 ;;
  esac
}

steps=("$@")
# image and superpixel rerun the benchmark's whole-image and superpixel lines
# of random and mc_variance in this environment: its records
# (docs/results/benchmark/) came from other package versions and differ
# (environment.json now records them).
# more_superpixel and more_whole are control 2 with twice the steps (mc_variance
# only): does the gap between partial masks and whole images close?
[ ${#steps[@]} -gt 0 ] || steps=(oracle whole image superpixel dense_image dense_superpixel more_superpixel
                                 more_whole)
for s in "${steps[@]}"; do step "$s"; done
