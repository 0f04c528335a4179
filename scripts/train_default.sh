#!/usr/bin/env bash
# Reproduce the shipped policies of one level on CPU (default grasp_easy; the MODEL_CARD has the measured
# figures): CEM plan -> its demonstrations -> flow BC (small) -> training-time RTC fine-tune.
# Every stage resumes where it stopped; outputs under runs/ (git-ignored).
#   bash scripts/train_default.sh [level] [bc epochs]
set -euo pipefail
level=${1:-grasp_easy}
epochs=${2:-24}
run=runs/default/${level}
python -m rtc_sweep.train task=plan level="${level}" task.generations=30 run_dir="${run}/plan"
python -m rtc_sweep.train task=flow level="${level}" model=small run_dir="${run}/bc" \
    task.data_path="${run}/plan/data/worlds_l_${level}.npz" task.num_epochs="${epochs}" task.optim.warmup_steps=200
last=$((epochs - 1))
python -m rtc_sweep.train task=flow_tt level="${level}" model=small run_dir="${run}/tt" \
    task.data_path="${run}/plan/data/worlds_l_${level}.npz" task.load_dir="${run}/bc/${last}" \
    task.optim.warmup_steps=200
echo "policies: ${run}/bc/${last}/policies/worlds_l_${level}.pkl (small)," \
     "${run}/tt/7/policies/worlds_l_${level}.pkl (small_tt)"
