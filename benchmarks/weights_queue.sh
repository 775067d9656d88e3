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
# Once the last snapshot (80k) is evaluated, the pick is made by validation alone
# (`vs_chemprop.pick_by_validation` on ESOL, FreeSolv and BBBP, among scratch, the 4k-step
# weights and the snapshots) and its evidence follows, each stage marked done in DONE:
# the pick on SIDER, Tox21 and ToxCast (3 seeds), the low-data protocol
# (`results/lowdata_pretrain5m_pick.json`), and ogbg-molhiv (3 seeds x 30 epochs,
# `results/ogbg_molhiv_pretrained.json`, resumable through MOLHIV/state_<label>), the same
# from scratch (`results/ogbg_molhiv_scratch.json`). The ablation's 2D-only and 3D-only arms
# are fine-tuned by `ablation_arms.sh` itself once each has trained.
#
#   TREE=/work/eval nohup benchmarks/weights_queue.sh > /work/weights_queue.log 2>&1 &
#
# TREE: the source tree the fine-tuning runs import (default: this repository); point it at a
# separate `git worktree` when this checkout is being edited while the queue runs (or run
# the worktree's copy of this script, with PYTHON and RESULTS pointing back here, so that
# edits to this file cannot reach the running shell).
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
TREE=${TREE:-$REPO}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
CHEMPROP=${CHEMPROP:-/work/chemprop-venv/bin/chemprop}
SNAPSHOTS=${SNAPSHOTS:-/work/pretrain-5m/snapshots}
WORK=${WORK:-/work/vsc_weights}
RESULTS=${RESULTS:-$REPO/benchmarks/results}
JSON=${JSON:-$RESULTS/vs_chemprop_weights.json}
DONE=${DONE:-$WORK/queue_done}
MOLHIV=${MOLHIV:-/work/molhiv}
OLD=benchmarks/weights/pretrained_small_4k.pt
mkdir -p "$DONE"
cd "$TREE" || exit 1
export PYTHONPATH=$TREE
run() {
  nice -n 19 "$PYTHON" benchmarks/vs_chemprop.py --chemprop "$CHEMPROP" --no-timing --threads 1 \
    --work "$WORK" --root "$WORK/data" --json "$JSON" "$@"
}
molhiv() {  # ogbg-molhiv, 3 seeds x 30 epochs on all training molecules; ARGS name the run
  nice -n 19 "$PYTHON" benchmarks/ogbg_molhiv.py --root "$MOLHIV" --max-train 0 --epochs 30 \
    --seeds 0 1 2 --threads 1 "$@"
}
pick() {  # "LABEL WEIGHTS" of the validation pick
  "$PYTHON" - "$JSON" <<'PICK'
import json, sys
sys.path.insert(0, "benchmarks")
from vs_chemprop import pick_by_validation
payload = json.load(open(sys.argv[1]))
fast = {k: v for k, v in payload["results"].items() if k in ("esol", "freesolv", "bbbp")}
weights = payload["args"]["weights"]
labels = [f"pyg-molblend:{x}" for x in ["scratch", "old", *[f"s{k}0k" for k in range(1, 9)]]]
# only entries with all 3 seeds on all three sets: a partly run one would skew the ranks
complete = [x for x in labels if all(len(e["metrics"].get(x, [])) >= 3 for e in fast.values())]
label, tied = pick_by_validation(fast, complete if len(fast) == 3 else [])
print(f"pick by validation: {label} (tied in mean rank: {tied})", file=sys.stderr)
if label is not None:
    print(label.split(":", 1)[1], weights[label])
PICK
}
stage() {  # stage NAME COMMAND...: run once, marked done in DONE; a failure stops the queue
  [ -f "$DONE/$1" ] && return 0
  local name=$1
  shift
  echo "stage $name: $*"
  "$@" && touch "$DONE/$name" && return 0
  echo "stage $name failed; re-run this script to retry it" >&2
  exit 1
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
  if [ -f "$DONE/s80" ]; then
    read -r label weights < <(pick)
    [ -n "${label:-}" ] || { echo "no pick: the validation results are incomplete" >&2; exit 1; }
    stage pick_six run --seeds 0 1 2 --datasets sider tox21 toxcast \
      --checkpoints "$label=$weights"
    if [ "$label" != scratch ]; then
      stage pick_lowdata nice -n 19 "$PYTHON" benchmarks/pretraining.py lowdata \
        --checkpoint "$label=$weights" --checkpoint "old=$OLD" --checkpoint random=random \
        --threads 1 --root "$WORK/lowdata_root" \
        --json "$RESULTS/lowdata_pretrain5m_pick.json"
      stage pick_molhiv molhiv --checkpoint "$weights" --state-dir "$MOLHIV/state_$label" \
        --json "$RESULTS/ogbg_molhiv_pretrained.json"
    fi
    # the same protocol without pretraining, the baseline that says what the weights add
    stage scratch_molhiv molhiv --state-dir "$MOLHIV/state_scratch" \
      --json "$RESULTS/ogbg_molhiv_scratch.json"
    exit 0
  fi
  [[ $failed == *" 80 "* ]] && exit 0
  sleep 60
done
