#!/bin/bash
# Issue 14, item 4: the evaluation queue that runs beside the 5M-visit pretraining run.
#
# Each new snapshot of the run (SNAPSHOTS/step_00<k>0000.pt) is fine-tuned on the fast sets
# (ESOL, FreeSolv, BBBP; 3 seeds) as soon as it exists, so that the validation ranking of
# `vs_chemprop.py` can pick one; ToxCast's baselines (scratch and the 4k-step weights, and
# chemprop) run one seed at a time in between. Everything lands in one JSON file, and
# `vs_chemprop.py` skips the runs already in it, so re-running this script after a session
# ends continues where it stopped. One thread, niced: it shares the cores with pretraining.
#
#   TREE=/work/eval nohup benchmarks/weights_queue.sh > /work/weights_queue.log 2>&1 &
#
# TREE: the source tree the fine-tuning runs import (default: this repository); point it at a
# separate `git worktree` when this checkout is being edited while the queue runs.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
TREE=${TREE:-$REPO}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
CHEMPROP=${CHEMPROP:-/work/chemprop-venv/bin/chemprop}
SNAPSHOTS=${SNAPSHOTS:-/work/pretrain-5m/snapshots}
WORK=${WORK:-/work/vsc_weights}
JSON=${JSON:-$REPO/benchmarks/results/vs_chemprop_weights.json}
DONE=${DONE:-$WORK/queue_done}
OLD=benchmarks/weights/pretrained_small_4k.pt
mkdir -p "$DONE"
cd "$TREE" || exit 1
export PYTHONPATH=$TREE
run() {
  nice -n 19 "$PYTHON" benchmarks/vs_chemprop.py --chemprop "$CHEMPROP" --no-timing --threads 1 \
    --work "$WORK" --root "$WORK/data" --json "$JSON" "$@"
}
toxcast=(0 1 2)
failed=" "
while true; do
  did=0
  for k in 10 20 30 40 50 60 70 80; do
    snapshot=$SNAPSHOTS/step_00${k}000.pt
    # the 20k snapshot entered the JSON file as its committed copy (a label keeps its file)
    [ "$k" = 20 ] && snapshot=benchmarks/weights/pretrain5m_step_0020000.pt
    if [ -f "$snapshot" ] && [ ! -f "$DONE/s$k" ] && [[ $failed != *" $k "* ]]; then
      if run --seeds 0 1 2 --datasets esol freesolv bbbp --checkpoints "s${k}k=$snapshot"; then
        touch "$DONE/s$k"
      else
        failed="$failed$k "  # not retried in this invocation (see the log)
      fi
      did=1
      break
    fi
  done
  [ $did = 1 ] && continue
  if [ ${#toxcast[@]} -gt 0 ]; then
    seed=${toxcast[0]}
    toxcast=("${toxcast[@]:1}")
    run --seeds "$seed" --datasets toxcast --checkpoints scratch=scratch "old=$OLD"
    continue
  fi
  { [ -f "$DONE/s80" ] || [[ $failed == *" 80 "* ]]; } && exit 0
  sleep 60
done
