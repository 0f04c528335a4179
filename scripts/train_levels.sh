#!/usr/bin/env bash
# Demonstrations -> flow BC (small) -> the shipping measurements, for each level given (default: all 12 in the
# model card's order). Per level, under runs/levels/<level>/ (git-ignored):
#   plan_s<k>/  cross-entropy-method plans with seeds 0..K-1 from random initial means (task=plan)
#   route       which route made the policy: multimodal (the first plan solves >= MIN_FIRST open-loop: the
#               plans that solve >= MIN_FIRST and differ are mixed) or closed_loop (it solves MIN_CLOSED..MIN_FIRST:
#               BC on its demonstrations alone); either way, when the BC policy solves < SI_BELOW (self-imitation's
#               iteration 0 measures it), success-filtered self-imitation of its own closed-loop rollouts polishes
#               it and the best iteration is the policy ("+si"); or SKIPPED with the reason
#   mix/        multimodal: the distinct plans merged into one dataset, modes.json says how different (task=mix)
#   bc/         flow BC of the small model (task=flow) on mix/ (multimodal) or plan_s0/ (closed_loop)
#   si/         task=self_imitation from bc/'s last epoch; the best iteration is the policy
#   eval_d0/    naive, d = 0, s = 1, 2048 episodes (the shipping criterion: >= 0.8)
#   eval_d4/    naive, d = 4, s = 4, 1024 episodes (delay sensitivity: >= 0.10 below eval_d0)
#   times.tsv   wall seconds per stage
# Every stage resumes where it stopped; a failed level is logged in runs/levels/failed.txt and the next starts.
#   bash scripts/train_levels.sh [level ...]
#   env: MODES (3), GENS (20), POP (128), NOISE (4), EPOCHS (10), MIN_FIRST (0.5), MIN_CLOSED (0.05), SI_ITERS (6),
#        SI_BELOW (0.85), GENS_MORE (40: when the first plan solves < MIN_FIRST but its last generation's population
#        solved something, the search goes on to this many generations before the route is chosen)
set -uo pipefail
MODES=${MODES:-3}; GENS=${GENS:-20}; POP=${POP:-128}; NOISE=${NOISE:-4}; EPOCHS=${EPOCHS:-10}
GENS_MORE=${GENS_MORE:-40}; MIN_FIRST=${MIN_FIRST:-0.5}; MIN_CLOSED=${MIN_CLOSED:-0.05}; SI_ITERS=${SI_ITERS:-6}; SI_BELOW=${SI_BELOW:-0.85}
levels=("$@")
[ ${#levels[@]} -eq 0 ] && levels=(grasp_easy catapult car_launch trampoline chain_lander catcher_v3 \
    hard_lunar_lander cartpole_thrust h17_unicycle mjc_swimmer mjc_half_cheetah mjc_walker)
stamp() { date +%s; }
solved_of() { python -c "import json; print(json.load(open('$1'))['plan']['returned_episode_solved'])"; }
at_least() { python -c "import sys; sys.exit(0 if $1 >= $2 else 1)"; }
plan() {  # plan <run> <level> <seed> [generations]
  [ -f "$1/plan_s$3/stats.json" ] || python -m rtc_sweep.train task=plan level="$2" seed="$3" \
    run_dir="$1/plan_s$3" task.generations="${4:-${GENS}}" task.population="${POP}" task.elite=16 \
    task.noise_seeds="${NOISE}" task.init_mean_std=0.5 task.eval_envs=$((POP * NOISE)) task.demo_envs=1024 \
    progress=false
}
for level in "${levels[@]}"; do
  run=runs/levels/${level}
  mkdir -p "${run}"
  log=${run}/times.tsv
  [ -f "${run}/SKIPPED" ] && continue
  (
    set -e  # (effective because the subshell's status is read after it, not in an || list)
    t0=$(stamp); plan "${run}" "${level}" 0; echo -e "plan_s0\t$(( $(stamp) - t0 ))" >> "${log}"
    first=$(solved_of "${run}/plan_s0/stats.json")
    if ! at_least "${first}" "${MIN_FIRST}" && python -c "import json, sys; h = json.load(open('${run}/plan_s0/cem.json'))
sys.exit(0 if len(h) < ${GENS_MORE} and h[-1]['population_solved'] > 0 else 1)"; then
      t0=$(stamp); rm "${run}/plan_s0/stats.json"; plan "${run}" "${level}" 0 "${GENS_MORE}"
      echo -e "plan_s0_more\t$(( $(stamp) - t0 ))" >> "${log}"
      first=$(solved_of "${run}/plan_s0/stats.json")
    fi
    if at_least "${first}" "${MIN_FIRST}"; then
      echo multimodal > "${run}/route"
      for ((k = 1; k < MODES; k++)); do
        t0=$(stamp); plan "${run}" "${level}" "${k}"; echo -e "plan_s${k}\t$(( $(stamp) - t0 ))" >> "${log}"
      done
      t0=$(stamp)
      python -m rtc_sweep.train task=mix level="${level}" task.plans="${run}/plan_s*" run_dir="${run}/mix" \
        task.min_solved="${MIN_FIRST}"
      echo -e "mix\t$(( $(stamp) - t0 ))" >> "${log}"
      data=${run}/mix/data/worlds_l_${level}.npz
    elif at_least "${first}" "${MIN_CLOSED}"; then
      echo closed_loop > "${run}/route"
      data=${run}/plan_s0/data/worlds_l_${level}.npz
    else
      echo "the open-loop plan solves ${first} < ${MIN_CLOSED} of its episodes: no demonstrations to start from" \
        > "${run}/SKIPPED"
      exit 1
    fi
    t0=$(stamp)
    python -m rtc_sweep.train task=flow level="${level}" model=small run_dir="${run}/bc" progress=false \
      task.data_path="${data}" task.num_epochs="${EPOCHS}" task.optim.warmup_steps=200
    echo -e "bc\t$(( $(stamp) - t0 ))" >> "${log}"
    ckpt=${run}/bc/$((EPOCHS - 1))/policies/worlds_l_${level}.pkl
    t0=$(stamp)
    python -m rtc_sweep.train task=self_imitation level="${level}" model=small run_dir="${run}/si" progress=false \
      task.init_checkpoint="${ckpt}" task.num_iterations=0
    bc_solved=$(python -c "import json; print(json.load(open('${run}/si/best.json'))['returned_episode_solved'])")
    if ! at_least "${bc_solved}" "${SI_BELOW}"; then
      python -m rtc_sweep.train task=self_imitation level="${level}" model=small run_dir="${run}/si" progress=false \
        task.init_checkpoint="${ckpt}" task.num_iterations="${SI_ITERS}" task.patience=3
      best=$(python -c "import json; print(json.load(open('${run}/si/best.json'))['iteration'])")
      [ "${best}" = 0 ] || { ckpt=${run}/si/${best}/policies/worlds_l_${level}.pkl; echo "$(cat "${run}/route")+si" > "${run}/route"; }
    fi
    echo -e "si\t$(( $(stamp) - t0 ))" >> "${log}"
    echo "${ckpt}" > "${run}/policy_path"
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
  )
  [ $? -eq 0 ] || echo "FAILED ${level} $(date -u +%FT%TZ)" >> runs/levels/failed.txt
done
