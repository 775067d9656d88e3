"""Does fine-tuning on several conformers help? ``finetune --mode 2d+3d`` with one RDKit
conformer per molecule against ``--num-conformers 11`` (a new one drawn each epoch,
validation and test on the first, as MoleBLEND and Uni-Mol do), issue 14 item 5.

Each run is the CLI with its defaults (shipped pretrained weights, scaffold split, 30
epochs, batch 32, selection on the validation metric), seeds ``--seeds``, on the offline
MoleculeNet CSVs. Both settings see the same split and the same first conformer (the K = 1
geometry is conformer 0 of K = 11), so the difference is the training conformers only.
Results go to ``--json`` after every run; a rerun skips finished runs (their
``metrics.json``). Usage::

    nice .venv/bin/python benchmarks/num_conformers.py --datasets esol freesolv \\
        --json benchmarks/results/num_conformers.json --work /tmp/num_conformers
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RAW = Path("/work/shared/data/moleculenet")
FILES = {"esol": "delaney-processed.csv", "freesolv": "SAMPL.csv", "bbbp": "BBBP.csv"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["esol", "freesolv"])
    parser.add_argument("--conformers", nargs="+", type=int, default=[1, 11])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--raw-dir", default=str(RAW))
    parser.add_argument("--work", default="/tmp/num_conformers")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    work = Path(args.work)
    cli = [sys.executable, "-m", "pyg_molblend", "finetune"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    results: dict[str, Any] = {"settings": vars(args), "runs": {}, "summary": {}}
    for name in args.datasets:
        raw = work / "data" / name / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(args.raw_dir) / FILES[name], raw / FILES[name])
        for k in args.conformers:
            for seed in args.seeds:
                out = work / f"{name}_k{k}_seed{seed}"
                metrics_path = out / "metrics.json"
                if not metrics_path.exists():
                    command = [*cli, "--dataset", name, "--root", str(work / "data")]
                    command += ["--skip-invalid", "--mode", "2d+3d", "--num-conformers", str(k)]
                    command += ["--seed", str(seed), "--device", "cpu", "--out", str(out)]
                    started = time.perf_counter()
                    done = subprocess.run(command, env=env, capture_output=True, text=True)
                    if done.returncode != 0:
                        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
                    print(f"{name} K={k} seed {seed}: {time.perf_counter() - started:.0f} s")
                metrics = json.loads(metrics_path.read_text())
                results["runs"][f"{name} k{k} seed{seed}"] = {
                    key: metrics[key]
                    for key in ("metric", "valid", "test", "best_epoch", "conformer_failures")
                }
            runs = [results["runs"][f"{name} k{k} seed{s}"] for s in args.seeds]
            tests = [r["test"] for r in runs]
            valids = [r["valid"] for r in runs]
            results["summary"][f"{name} k{k}"] = {
                "metric": runs[0]["metric"],
                "test_mean": statistics.mean(tests),
                "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                "valid_mean": statistics.mean(valids),
                "seeds": args.seeds,
            }
            print(name, f"K={k}", json.dumps(results["summary"][f"{name} k{k}"]))
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
