#!/usr/bin/env bash
# Multimodal demonstrations -> flow BC (small) -> the shipping measurements, for each level given (default: all
# 12 in the order of the model card). Per level, under runs/levels/<level>/ (git-ignored):
#   plan_s<k>/  K cross-entropy-method plans with seeds 0..K-1 from random initial means (task=plan)
#   mix/        the distinct ones merged into one dataset, modes.json says how different they are (task=mix)
#   bc/         flow BC of the small model on the mix (task=flow)
#   eval_d0/    naive, d = 0, s = 1, 2048 episodes (the shipping criterion: >= 0.8)
#   eval_d4/    naive, d = 4, s = 4, 1024 episodes (delay sensitivity: >= 0.10 below eval_d0)
# Every stage resumes where it stopped; a failed level is logged and the next one starts.
#   bash scripts/train_levels.sh [level ...]       env: MODES (3), GENS (20), POP (128), EPOCHS (10)
set -uo pipefail
MODES=${MODES:-3}; GENS=${GENS:-20}; POP=${POP:-128}; NOISE=${NOISE:-4}; EPOCHS=${EPOCHS:-10}
MIN_FIRST=${MIN_FIRST:-0.5}  # a level whose first plan solves less than this open-loop is left (needs closed loop)
levels=("$@")
[ ${#levels[@]} -eq 0 ] && levels=(grasp_easy catapult car_launch trampoline chain_lander catcher_v3 \
    hard_lunar_lander cartpole_thrust h17_unicycle mjc_swimmer mjc_half_cheetah mjc_walker)
stamp() { date +%s; }
for level in "${levels[@]}"; do
  run=runs/levels/${level}
  mkdir -p "${run}"
  log=${run}/times.tsv
  (
    set -e
    for ((k = 0; k < MODES; k++)); do
      t0=$(stamp)
      [ -f "${run}/plan_s${k}/stats.json" ] || python -m rtc_sweep.train task=plan level="${level}" seed="${k}" \
        run_dir="${run}/plan_s${k}" task.generations="${GENS}" task.population="${POP}" task.elite=16 \
        task.noise_seeds="${NOISE}" task.init_mean_std=0.5 task.eval_envs=$((POP * NOISE)) task.demo_envs=1024 \
        progress=false
      echo -e "plan_s${k}\t$(( $(stamp) - t0 ))" >> "${log}"
      if [ "${k}" -eq 0 ]; then
        first=$(python -c "import json; print(json.load(open('${run}/plan_s0/stats.json'))['plan']['returned_episode_solved'])")
        python -c "import sys; sys.exit(0 if ${first} >= ${MIN_FIRST} else 1)" || {
          echo "open-loop plan solves ${first} < ${MIN_FIRST}: left for a closed-loop route" > "${run}/SKIPPED"; exit 1; }
      fi
    done
    t0=$(stamp)
    python -m rtc_sweep.train task=mix level="${level}" task.plans="${run}/plan_s*" run_dir="${run}/mix"
    echo -e "mix\t$(( $(stamp) - t0 ))" >> "${log}"
    t0=$(stamp)
    python -m rtc_sweep.train task=flow level="${level}" model=small run_dir="${run}/bc" progress=false \
      task.data_path="${run}/mix/data/worlds_l_${level}.npz" task.num_epochs="${EPOCHS}" task.optim.warmup_steps=200
    echo -e "bc\t$(( $(stamp) - t0 ))" >> "${log}"
    ckpt=${run}/bc/$((EPOCHS - 1))/policies/worlds_l_${level}.pkl
    t0=$(stamp)
    python -m rtc_sweep level="${level}" model=small checkpoint="${ckpt}" method=naive delay_profile=fixed \
      delay_profile.fixed_delay=0 execute_policy.execute_horizon=1 num_evals=2048 seed=0 progress=false \
      hydra.run.dir="${run}/eval_d0"
    echo -e "eval_d0\t$(( $(stamp) - t0 ))" >> "${log}"
    t0=$(stamp)
    python -m rtc_sweep level="${level}" model=small checkpoint="${ckpt}" method=naive delay_profile=fixed \
      delay_profile.fixed_delay=4 execute_policy.execute_horizon=4 num_evals=1024 seed=0 progress=false \
      hydra.run.dir="${run}/eval_d4"
    echo -e "eval_d4\t$(( $(stamp) - t0 ))" >> "${log}"
  ) || echo "FAILED ${level}" >> runs/levels/failed.txt
done
