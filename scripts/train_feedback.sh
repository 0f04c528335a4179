#!/usr/bin/env bash
# The closed-loop route: each open-loop plan of scripts/train_levels.sh continued as a feedback controller
# (task=plan task.feedback_dims=K task.init_plan=<plan>), its demonstrations -> flow BC (small) -> DAgger with the
# first feedback plan as the expert (task=relabel) -> the shipping measurements. Per level, under
# runs/levels/<level>/ (git-ignored):
#   fb<K>_s<k>/       the feedback search continued from plan_s<k>/ (for each plan_s<k> that solves >= MIN_PLAN)
#   fb<K>_mix/        when more than one feedback plan solves >= MIN_FIRST and they differ: task=mix of them
#   fb<K>_bc/ fb<K>_relabel/  flow BC on the feedback demonstrations; DAgger from its last epoch (best iteration)
#   fb<K>_eval_d0/    naive, d = 0, s = 1, 2048 episodes (the shipping criterion: >= 0.8)
#   fb<K>_eval_d4/    naive, d = 4, s = 4, 1024 episodes (delay sensitivity: >= 0.10 below eval_d0)
#   fb<K>_policy_path, times.tsv (stages prefixed fb<K>_)
# Resumable like train_levels.sh: each stage is skipped when its output exists.
#   bash scripts/train_feedback.sh [level ...]
#   env: K (8: feedback directions), GENS (15), POP (128), NOISE (4), INIT_STD (0.3), EPOCHS (30), ITERS (6: DAgger),
#        MIN_PLAN (0.3: open-loop plans worth continuing), MIN_FIRST (0.5), SURVIVAL (0: task.survival_weight, 1 for
#        levels that end by a fall, e.g. cartpole_thrust), FB_STD (0.3: task.feedback_std)
set -uo pipefail
K=${K:-8}; GENS=${GENS:-15}; POP=${POP:-128}; NOISE=${NOISE:-4}; INIT_STD=${INIT_STD:-0.3}; EPOCHS=${EPOCHS:-30}
ITERS=${ITERS:-6}; MIN_PLAN=${MIN_PLAN:-0.3}; MIN_FIRST=${MIN_FIRST:-0.5}; SURVIVAL=${SURVIVAL:-0}; FB_STD=${FB_STD:-0.3}
stamp() { date +%s; }
solved_of() { python -c "import json; print(json.load(open('$1'))['plan']['returned_episode_solved'])"; }
at_least() { python -c "import sys; sys.exit(0 if $1 >= $2 else 1)"; }
for level in "$@"; do
  run=runs/levels/${level}
  log=${run}/times.tsv
  fb=fb${K}
  (
    set -e
    kept=()
    for plan in "${run}"/plan_s*; do
      [ -f "${plan}/stats.json" ] || continue
      at_least "$(solved_of "${plan}/stats.json")" "${MIN_PLAN}" || continue
      out=${run}/${fb}_$(basename "${plan}" | sed 's/plan_//')
      if [ ! -f "${out}/stats.json" ]; then
        t0=$(stamp)
        python -m rtc_sweep.train task=plan level="${level}" seed=0 run_dir="${out}" task.feedback_dims="${K}" \
          task.init_plan="${plan}" task.generations="${GENS}" task.population="${POP}" task.elite=16 \
          task.noise_seeds="${NOISE}" task.init_std="${INIT_STD}" task.eval_envs=$((POP * NOISE)) \
          task.survival_weight="${SURVIVAL}" task.feedback_std="${FB_STD}" task.demo_envs=1024 progress=false
        echo -e "${fb}_$(basename "${plan}")\t$(( $(stamp) - t0 ))" >> "${log}"
      fi
      at_least "$(solved_of "${out}/stats.json")" "${MIN_FIRST}" && kept+=("${out}")
    done
    [ ${#kept[@]} -gt 0 ] || { echo "no feedback plan solves >= ${MIN_FIRST}"; exit 1; }
    if [ ${#kept[@]} -gt 1 ]; then
      t0=$(stamp)
      [ -f "${run}/${fb}_mix/modes.json" ] || python -m rtc_sweep.train task=mix level="${level}" \
        task.plans="${run}/${fb}_s*" run_dir="${run}/${fb}_mix" task.min_solved="${MIN_FIRST}"
      echo -e "${fb}_mix\t$(( $(stamp) - t0 ))" >> "${log}"
      data=${run}/${fb}_mix/data/worlds_l_${level}.npz
    else
      data=${kept[0]}/data/worlds_l_${level}.npz
    fi
    ckpt=${run}/${fb}_bc/$((EPOCHS - 1))/policies/worlds_l_${level}.pkl
    if [ ! -f "${ckpt}" ]; then
      t0=$(stamp)
      python -m rtc_sweep.train task=flow level="${level}" model=small run_dir="${run}/${fb}_bc" progress=false \
        task.data_path="${data}" task.num_epochs="${EPOCHS}" task.optim.warmup_steps=200
      echo -e "${fb}_bc\t$(( $(stamp) - t0 ))" >> "${log}"
    fi
    t0=$(stamp)
    python -m rtc_sweep.train task=relabel level="${level}" model=small run_dir="${run}/${fb}_relabel" \
      progress=false task.init_checkpoint="${ckpt}" task.expert_dir="${kept[0]}" task.num_iterations="${ITERS}"
    best=$(python -c "import json; print(json.load(open('${run}/${fb}_relabel/best.json'))['iteration'])")
    [ "${best}" = 0 ] || ckpt=${run}/${fb}_relabel/${best}/policies/worlds_l_${level}.pkl
    echo -e "${fb}_relabel\t$(( $(stamp) - t0 ))" >> "${log}"
    echo "${ckpt}" > "${run}/${fb}_policy_path"
    for d in 0 4; do
      [ -f "${run}/${fb}_eval_d${d}/results.csv" ] && continue
      t0=$(stamp)
      python -m rtc_sweep level="${level}" model=small checkpoint="${ckpt}" method=naive delay_profile=fixed \
        delay_profile.fixed_delay="${d}" execute_policy.execute_horizon=$(( d > 1 ? d : 1 )) \
        num_evals=$(( d == 0 ? 2048 : 1024 )) seed=0 progress=false hydra.run.dir="${run}/${fb}_eval_d${d}"
      echo -e "${fb}_eval_d${d}\t$(( $(stamp) - t0 ))" >> "${log}"
    done
  )
  [ $? -eq 0 ] || echo "FAILED feedback ${level} $(date -u +%FT%TZ)" >> runs/levels/failed.txt
done
