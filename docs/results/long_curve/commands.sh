#!/usr/bin/env bash
# The long-curve study's runs, in the order they were started
# (docs/results/preregistration.md). Each finished run's records are copied to
# docs/results/long_curve/<name>/ (metrics.jsonl, selections, config.json) and
# committed. Rerunning this script resumes every run where it stopped.
#   bash docs/results/long_curve/commands.sh [STEP ...]   (default: every step)
set -euo pipefail
cd "$(dirname "$0")/../../.."
W=workdir/long_curve
OUT=docs/results/long_curve

source docs/results/runs.sh

step() {
  case $1 in
    full0) run full --flagfile=configs/bench/full.flags --al_seeds=0 ;;
    full12) run full --flagfile=configs/bench/full.flags --al_seeds=0,1,2 ;;
    full_long0) run full_long --flagfile=configs/bench/full_long.flags --al_seeds=0 ;;
    full_long12) run full_long_12 --flagfile=configs/bench/full_long.flags --al_seeds=1,2 ;;
    full_160_0) run full_160 --flagfile=configs/bench/full_long.flags --train_epochs=160 --al_seeds=0 ;;
    seed[0-9]) run "seed_${1#seed}" --flagfile=configs/bench/long_curve.flags --al_seeds="${1#seed}" ;;
    control3_[0-9]) run "control_3/seed_${1#control3_}" --flagfile=configs/bench/long_curve_control.flags \
        --al_seeds="${1#control3_}" --al_label_cycles=3 --al_cycles=5 ;;
    control7_[0-9]) run "control_7/seed_${1#control7_}" --flagfile=configs/bench/long_curve_control.flags \
        --al_seeds="${1#control7_}" --al_label_cycles=7 --al_cycles=9 ;;
    *) echo "unknown step $1" >&2; exit 2 ;;
  esac
}

steps=("$@")
# full0, seed0, full_long0 and random of seed1 have finished; the convergence
# check moved the reference to full_long over seeds 0-2 (long_curve.md), so
# full12 (40 epochs, seeds 1-2) is no longer part of the plan. full_long's
# seeds 1-2 run in their own work directory (full_long_12): the report merges
# the two (--reference_workdir=A,B) without redoing seed 0.
[ ${#steps[@]} -gt 0 ] || steps=(full0 seed0 full_long0 seed1 full_long12 seed2 seed3 control3_0
                                 control7_0 seed4 seed5 control3_1 control7_1 full_160_0)
for s in "${steps[@]}"; do step "$s"; done
