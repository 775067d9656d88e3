"""Regression error by substructure: how much of each split's RMSE one chemical series makes.

For each fine-tuned run folder (``pyg-molblend finetune --out DIR``), reads the predictions of
``pyg-molblend evaluate --split all`` over the whole dataset (``DIR_all/predictions.csv``,
written by this script when missing), and, for the train, valid and test rows of the split
file the run used, reports the RMSE, the RMSE without the molecules that match ``--smarts``,
the matches' share of the squared error and their mean signed error (prediction minus
target). A scaffold split can put a whole series in one part: this shows whether a
comparison of validation scores is a comparison on that series.

Usage (RESULTS.md section 10c; runs of ``finetune --split-file split_rows.json``)::

    python benchmarks/error_by_substructure.py --split-file work/freesolv/split_rows.json \\
        --dataset freesolv --root data --smarts "[#6]1~[#6]~[#6](=O)~[#7]~[#6](=O)~[#7]~1" \\
        --runs scratch=runs/fs_scratch_s0 scratch=runs/fs_scratch_s1 pretrained=runs/fs_pre_s0 \\
        --json benchmarks/results/freesolv_uracils.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from rdkit import Chem

PARTS = ("train", "valid", "test")


def predictions(run: Path, dataset: str, root: str) -> pd.DataFrame:
    """The run's predictions for every molecule of the dataset, indexed by data row."""
    out = run.parent / (run.name + "_all")
    table = out / "predictions.csv"
    if not table.exists():
        command = [
            str(Path(sys.executable).with_name("pyg-molblend")),
            "evaluate",
            "--checkpoint",
            str(run / "model.pt"),
            "--dataset",
            dataset,
            "--root",
            root,
            "--skip-invalid",
            "--split",
            "all",
            "--out",
            str(out),
        ]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return pd.read_csv(table).set_index("row")


def errors(table: pd.DataFrame, rows: list[int], pattern: Chem.Mol) -> dict[str, float]:
    part = table.loc[rows]
    predicted = [c for c in part.columns if c.endswith("_pred")]
    if len(predicted) != 1:
        raise SystemExit(f"one regression target expected, the predictions hold {predicted}")
    target = predicted[0]
    error = (part[target] - part[target[: -len("_pred")]]).to_numpy(dtype=float)
    match = np.array([Chem.MolFromSmiles(s).HasSubstructMatch(pattern) for s in part["smiles"]])
    squared = error**2
    return {
        "n": len(rows),
        "matches": int(match.sum()),
        "rmse": float(np.sqrt(squared.mean())),
        "rmse_without": float(np.sqrt(squared[~match].mean())),
        "share": float(squared[match].sum() / squared.sum()) if match.any() else 0.0,
        "mean_error_matches": float(error[match].mean()) if match.any() else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, metavar="LABEL=DIR")
    parser.add_argument("--split-file", type=Path, required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--root", default="data")
    parser.add_argument("--smarts", required=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    pattern = Chem.MolFromSmarts(args.smarts)
    if pattern is None:
        parser.error(f"--smarts {args.smarts!r} does not parse")
    split = json.loads(args.split_file.read_text())
    results: dict[str, list] = {}
    for entry in args.runs:
        label, _, folder = entry.partition("=")
        if not folder:
            parser.error(f"--runs entries are LABEL=DIR, got {entry!r}")
        table = predictions(Path(folder), args.dataset, args.root)
        row = {part: errors(table, list(split[part]), pattern) for part in PARTS}
        results.setdefault(label, []).append({"run": folder, **row})
        print(
            f"{label} {folder}: "
            + "; ".join(
                f"{part} {row[part]['rmse']:.3f} ({row[part]['matches']} matches: without "
                f"{row[part]['rmse_without']:.3f}, share {row[part]['share']:.2f})"
                for part in PARTS
            )
        )
    print(
        "\nlabel | part | runs | matches | rmse | rmse without matches | matches' share | "
        "their mean error"
    )
    for label, runs in results.items():
        for part in PARTS:
            keys = ("rmse", "rmse_without", "share", "mean_error_matches")
            cells = [[r[part][k] for r in runs if r[part][k] is not None] for k in keys]
            text = [f"{statistics.mean(c):.3f}" if c else "-" for c in cells]
            print(
                f"{label} | {part} | {len(runs)} | {runs[0][part]['matches']} of "
                f"{runs[0][part]['n']} | " + " | ".join(text)
            )
    if args.json:
        record = {"smarts": args.smarts, "split_file": str(args.split_file), "results": results}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
