"""``pyg-molblend evaluate``: score a fine-tuned ``model.pt`` on a dataset."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from pyg_molblend import __version__
from pyg_molblend.cli.common import (
    add_data_arguments,
    add_device_argument,
    load_labelled,
    make_split,
    rows_to_positions,
    write_predictions,
)
from pyg_molblend.training.checkpoint import data_fingerprint, load_predictor
from pyg_molblend.training.finetune import evaluate
from pyg_molblend.training.io import check_writable, write_json
from pyg_molblend.training.metrics import primary_metric

__all__ = ["add_arguments", "run"]


def add_arguments(subparsers: Any) -> None:
    ev = subparsers.add_parser("evaluate", help="evaluate a fine-tuned model.pt on a dataset")
    add_data_arguments(ev, evaluate=True)
    ev.add_argument("--checkpoint", required=True, help="model.pt written by finetune")
    ev.add_argument("--batch-size", type=int, default=64)
    add_device_argument(ev)
    ev.add_argument("--out", default="runs/evaluate", help="output directory")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Score a fine-tuned model.pt; write metrics.json and predictions.csv."""
    out = check_writable(args.out)
    predictor, meta = load_predictor(args.checkpoint)
    predictor.to(args.device)
    dataset, name = load_labelled(args, meta["mode"])
    if dataset.num_tasks != meta["num_tasks"] or dataset.task_type != meta["task_type"]:
        raise ValueError(
            f"Checkpoint {args.checkpoint!r} predicts {meta['num_tasks']} {meta['task_type']} "
            f"targets, dataset {name!r} has {dataset.num_tasks} {dataset.task_type} targets"
        )
    everything = np.arange(len(dataset))
    split_name = args.split
    if args.split_file:
        split_name = "file"
        split = make_split(dataset, "scaffold", meta["seed"], args.split_file)
    elif args.split == "all":
        split = {"all": everything}
    elif args.split is not None:
        split = make_split(dataset, args.split, meta["seed"], None)
    elif meta.get("data_fingerprint") == data_fingerprint(dataset):
        split_name = "finetune"
        split = rows_to_positions(
            dataset, meta["split_rows"], f"the split stored in {args.checkpoint!r}"
        )
    else:
        split_name = "all"
        split = {"all": everything}
        print(
            f"{name}: not the data {args.checkpoint!r} was fine-tuned on; scoring all "
            f"{len(dataset)} molecules (choose a split with --split)"
        )
    results = {}
    predictions = {}
    for part, index in split.items():
        subset = dataset[torch.as_tensor(index, dtype=torch.long)]
        results[part], predictions[part] = evaluate(
            predictor, subset, args.batch_size, args.device, progress=True, desc=part
        )
    metric = primary_metric(meta["task_type"])
    main = "test" if "test" in results else "all"
    metrics = {
        "dataset": name,
        "task": meta["task_type"],
        "metric": metric,
        "valid": results["valid"][metric] if "valid" in results else None,
        "test": results[main][metric],
        "metrics": results,
        "epochs": None,
        "seconds": None,
        "seed": meta["seed"],
        "mode": meta["mode"],
        "split": split_name,
        **{f"num_{part}": len(index) for part, index in split.items()},
        "checkpoint": args.checkpoint,
        "skipped_invalid": len(dataset.skipped),
        "skipped_too_large": len(dataset.too_large),
        "version": __version__,
    }
    write_json(out / "metrics.json", metrics)
    write_predictions(str(out / "predictions.csv"), dataset, split[main], predictions[main], main)
    print(
        f"{name}: {main} {metric} = {metrics['test']:.4f} ({split_name} split, "
        f"{len(split[main])} molecules); wrote {out}/metrics.json, predictions.csv"
    )
    return metrics
