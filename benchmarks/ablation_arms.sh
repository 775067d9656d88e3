#!/bin/bash
# Issue 14, item 4: the 2D-only and 3D-only arms of the pretraining ablation at the budget of
# the 5M-visit blend run (RESULTS.md section 10b): the same store, model, schedule and seed,
# only `--mode` differs. The arms run one after the other, each continued from its checkpoint
# (`--resume`), so re-running this script after a session ends goes on where it stopped; an arm
# whose 80,000-step snapshot exists is done. A done arm's 70k and 80k snapshots (the blend run's
# pick and its end) are then fine-tuned on ESOL, FreeSolv and BBBP, 3 seeds each, by
# `vs_chemprop.py` into JSON, a copy of the blend run's `results/vs_chemprop_weights.json`
# (labels 2d70k, 2d80k, 3d70k, 3d80k beside its s70k and s80k; runs already in it are skipped,
# so this resumes too). JSON lies outside the repository: copy it back when it is complete.
# chemprop is not needed (its runs are in the file already). An arm whose four labels are
# complete in JSON or in the repository's copy is done, snapshots or not.
#
#   TREE=/work/eval nohup /work/eval/benchmarks/ablation_arms.sh >> /work/ablation_arms.log 2>&1 &
#
# MODES picks the arms (default "2d 3d"); two instances may run different arms side by side
# (MODES=3d beside the 2D arm's instance), and an arm another instance is training is skipped
# (a lock file beside its output folder), never trained twice at once.
#
# One thread (THREADS), niced: the other core trains the other arm; an arm alone on the
# machine trains faster with THREADS=2 (the fine-tuning runs keep one thread). STORE is the
# store the blend run read (its cache key covers these inputs and options); where it is
# missing the arm's command prepares it again (resumably: a killed preparation continues),
# and a store prepared again holds the same molecules in the same order, a few with other
# conformers (RDKit's timeout is wall-clock), on which `--resume` continues with a warning.
#
# Sessions end and machines get replaced: at the end of a session commit the training arm's
# checkpoint as benchmarks/weights/ablation_<mode>_checkpoint.pt (about 9 MB; one at a time).
# An arm whose output folder has no checkpoint starts from that committed file when the
# repository of TREE holds one.
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
TREE=${TREE:-$REPO}
PYTHON=${PYTHON:-/work/main/.venv/bin/python}
SHARED=${SHARED:-/work/shared/data}
QM9=${QM9:-/work/qm9-pretrain}
STORE=${STORE:-/work/pretrain-5m/data}
PREFIX=${PREFIX:-/work/pretrain-5m}
MODES=${MODES:-2d 3d}
JSON=${JSON:-/work/results_pending/vs_chemprop_weights.json}
EVAL=${EVAL:-/work/vsc_ablation}  # split files, fine-tuned models, MoleculeNet cache
# A replaced machine has neither the venv nor the QM9 links: make the links (parts 01-16, part
# 17 held out as in RESULTS.md section 5), and say how to make the venv instead of failing later.
if [ ! -x "$PYTHON" ]; then
  echo "no $PYTHON: run 'make setup' in /work/main first (or set PYTHON)" >&2
  exit 2
fi
if [ ! -d "$QM9/raw" ]; then
  mkdir -p "$QM9/raw"
  for part in $(seq -w 1 16); do
    ln -s "$SHARED/3d/qm9/qm9_b3lyp_part$part.csv.gz" "$QM9/raw/"
  done
  echo "linked QM9 parts 01-16 of $SHARED/3d/qm9 under $QM9/raw"
fi
cd /work
export PYTHONPATH=$TREE OMP_NUM_THREADS=${THREADS:-1}
evaluate() {  # evaluate MODE: the done arm's 70k and 80k snapshots on the fast sets
  local out=$PREFIX-$1 k
  exec 8>"$JSON.lock"
  flock 8  # one writer of JSON at a time (the other arm's instance may be evaluating)
  if [ ! -f "$JSON" ]; then
    mkdir -p "$(dirname "$JSON")"
    cp "$TREE/benchmarks/results/vs_chemprop_weights.json" "$JSON"
  fi
  for k in 70 80; do
    if [ ! -f "$out/snapshots/step_00${k}000.pt" ]; then
      # an arm continued from a committed checkpoint past this step on a replaced machine
      echo "$1 arm: no ${k}k snapshot in $out/snapshots; not evaluated" >&2
      continue
    fi
    echo "$1 arm: fine-tuning its ${k}k snapshot ($(date -u +%H:%M) UTC) into $JSON"
    nice -n 19 "$PYTHON" "$TREE/benchmarks/vs_chemprop.py" --no-timing --threads 1 \
      --seeds 0 1 2 --datasets esol freesolv bbbp --work "$EVAL" --root "$EVAL/data" \
      --json "$JSON" --checkpoints "$1${k}k=$out/snapshots/step_00${k}000.pt"
  done
  exec 8>&-
  echo "$1 arm: evaluated ($(date -u +%H:%M) UTC)"
}
evaluated() {  # evaluated MODE: JSON, or the repository's copy of it, holds all those runs
  "$PYTHON" - "$1" "$JSON" "$TREE/benchmarks/results/vs_chemprop_weights.json" <<'PY'
import json, sys
from pathlib import Path

mode, *files = sys.argv[1:]
labels = [f"pyg-molblend:{mode}{k}k" for k in (70, 80)]
for path in map(Path, files):
    results = json.loads(path.read_text())["results"] if path.exists() else {}
    if all(
        len(results.get(name, {}).get("metrics", {}).get(label, [])) >= 3
        for name in ("esol", "freesolv", "bbbp")
        for label in labels
    ):
        sys.exit(0)
sys.exit(1)
PY
}
for mode in $MODES; do
  out=$PREFIX-$mode
  # an arm whose snapshots were evaluated is done even where they are gone (a replaced
  # machine), so that the arm is not trained again from its start
  if evaluated "$mode"; then
    echo "$mode arm: trained and evaluated"
    continue
  fi
  if [ -f "$out/snapshots/step_0080000.pt" ]; then
    echo "$mode arm: trained ($out)"
    evaluate "$mode"
    continue
  fi
  exec 9>"$out.lock"
  if ! flock -n 9; then
    echo "$mode arm: another instance is training it ($out.lock); skipped"
    continue
  fi
  committed=$TREE/benchmarks/weights/ablation_${mode}_checkpoint.pt
  if [ ! -f "$out/checkpoint.pt" ] && [ -f "$committed" ]; then
    mkdir -p "$out"
    cp "$committed" "$out/checkpoint.pt"
    echo "$mode arm: continuing from the committed $committed"
  fi
  echo "$mode arm: $out ($(date -u +%H:%M) UTC)"
  # --edge-target joint: the blend run the arms are compared with (the shipped weights)
  # and the committed arm checkpoints used the joint 60-class edge head.
  nice -n 19 "$PYTHON" -m pyg_molblend pretrain --smiles "$SHARED"/pretrain/*.csv.gz \
    --skip-invalid --qm9 "$QM9" --root "$STORE" --preset small --steps 80000 --batch-size 64 \
    --lr 2e-4 --warmup-steps 1000 --save-every 1000 --keep-every 10000 --num-workers 2 \
    --seed 0 --mode "$mode" --edge-target joint --out "$out" --resume
  exec 9>&-
  evaluate "$mode"
done
