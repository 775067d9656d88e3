"""Ensembles and their uncertainty: is an ensemble better than one model, and does its
spread rank the errors?

For each dataset (default ESOL and BBBP, scaffold split): ``pyg-molblend finetune
--ensemble-size N`` with its defaults (the shipped weights, 30 epochs), whose members are
the single models of seeds 0..N-1 on the same split. Reported on the test split:

* the ensemble mean's metric against the members' (mean, standard deviation, best);
* for the ensemble's spread (``--uncertainty ensemble``) and for Monte Carlo dropout on
  member 0 (``evaluate --uncertainty dropout --samples K``): Spearman's rank correlation
  of the absolute error with the standard deviation (pooled over tasks, labelled pairs
  only; for classification the error is ``|p - y|``), and the mean absolute error (and
  RMSE) in the more certain and the less certain half of the labelled pairs.

Resumable: a dataset whose run folder holds ``metrics.json`` is not trained again.
Results go to ``results/ensemble_uncertainty.json`` as each dataset finishes.

Usage::

    python benchmarks/ensemble_uncertainty.py --work /tmp/ens
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from moleculenet import DEFAULT_RAW_DIR, prepare_dataset
from scipy.stats import spearmanr

HERE = Path(__file__).resolve().parent


def uncertainty_stats(table: pd.DataFrame, tasks: list[str]) -> dict[str, float]:
    """Spearman of |error| vs std and the error in the more and less certain halves,
    over the labelled (molecule, task) pairs of a predictions.csv."""
    errors, spreads = [], []
    for task in tasks:
        labelled = table[task].notna()
        errors.append((table.loc[labelled, f"{task}_pred"] - table.loc[labelled, task]).abs())
        spreads.append(table.loc[labelled, f"{task}_std"])
    error = np.concatenate(errors)
    std = np.concatenate(spreads)
    order = np.argsort(std, kind="stable")
    half = len(order) // 2
    certain, uncertain = error[order[:half]], error[order[half:]]
    rho = spearmanr(error, std)
    return {
        "pairs": len(error),
        "spearman": float(rho.statistic),
        "spearman_p": float(rho.pvalue),
        "mae_most_certain_half": float(certain.mean()),
        "mae_least_certain_half": float(uncertain.mean()),
        "rmse_most_certain_half": float(np.sqrt((certain**2).mean())),
        "rmse_least_certain_half": float(np.sqrt((uncertain**2).mean())),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["esol", "bbbp"])
    parser.add_argument("--ensemble-size", type=int, default=5)
    parser.add_argument("--samples", type=int, default=20, help="MC dropout samples")
    parser.add_argument("--work", default="runs/ensemble_uncertainty", help="run folders")
    parser.add_argument("--raw-dir", default=DEFAULT_RAW_DIR, help="offline MoleculeNet CSVs")
    parser.add_argument("--out", default=str(HERE / "results" / "ensemble_uncertainty.json"))
    args = parser.parse_args()
    work = Path(args.work)
    root = work / "data"
    cli = [sys.executable, "-m", "pyg_molblend"]
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    for name in args.datasets:
        prepare_dataset(name, root, Path(args.raw_dir))
        run = work / name
        data = ["--dataset", name, "--root", str(root), "--skip-invalid"]
        if not (run / "metrics.json").exists():
            start = time.perf_counter()
            subprocess.run(
                [
                    *cli,
                    "finetune",
                    *data,
                    "--ensemble-size",
                    str(args.ensemble_size),
                    "--out",
                    str(run),
                ],
                check=True,
            )
            print(f"{name}: ensemble trained in {time.perf_counter() - start:.0f} s")
        dropout = work / f"{name}_dropout"
        if not (dropout / "metrics.json").exists():
            subprocess.run(
                [
                    *cli,
                    "evaluate",
                    *data,
                    "--checkpoint",
                    str(run / "model_0.pt"),
                    "--uncertainty",
                    "dropout",
                    "--samples",
                    str(args.samples),
                    "--out",
                    str(dropout),
                ],
                check=True,
            )
        metrics = json.loads((run / "metrics.json").read_text())
        metric = metrics["metric"]
        members = [m["test"] for m in metrics["members"]]
        tasks = [
            c[: -len("_std")]
            for c in pd.read_csv(run / "predictions.csv", nrows=0)
            if c.endswith("_std")
        ]
        results[name] = {
            "metric": metric,
            "ensemble_size": metrics["ensemble_size"],
            "num_test": metrics["num_test"],
            "ensemble_test": metrics["test"],
            "members_test": members,
            "members_mean": float(np.mean(members)),
            "members_std": float(np.std(members, ddof=1)),
            "ensemble_uncertainty": uncertainty_stats(pd.read_csv(run / "predictions.csv"), tasks),
            "dropout_member_0": {
                "test": json.loads((dropout / "metrics.json").read_text())["test"],
                "samples": args.samples,
                **uncertainty_stats(pd.read_csv(dropout / "predictions.csv"), tasks),
            },
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps({name: results[name]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
