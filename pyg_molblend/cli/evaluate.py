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
    attach_descriptors,
    load_labelled,
    make_split,
    positive_int,
    rows_to_positions,
    task_classes,
    write_predictions,
)
from pyg_molblend.training.checkpoint import data_fingerprint
from pyg_molblend.training.finetune import stack_targets
from pyg_molblend.training.inference import UNCERTAINTY, ModelSet
from pyg_molblend.training.io import check_writable, write_json
from pyg_molblend.training.metrics import compute_metrics, primary_metric

__all__ = ["add_arguments", "run"]


def add_arguments(subparsers: Any) -> None:
    ev = subparsers.add_parser("evaluate", help="evaluate a fine-tuned model.pt on a dataset")
    add_data_arguments(ev, evaluate=True)
    ev.add_argument(
        "--checkpoint",
        required=True,
        help="model.pt written by finetune, or its output folder (an ensemble is averaged)",
    )
    ev.add_argument(
        "--uncertainty",
        choices=UNCERTAINTY,
        help="add <task>_std columns to predictions.csv: the ensemble members' spread, or "
        "Monte Carlo dropout",
    )
    ev.add_argument(
        "--samples", type=positive_int, default=10, help="dropout samples per model (default: 10)"
    )
    ev.add_argument(
        "--descriptors",
        metavar="FILE",
        help="the per-molecule descriptors of the data file, for a model fine-tuned with "
        "--descriptors (one row per data row)",
    )
    ev.add_argument("--batch-size", type=positive_int, default=64)
    add_device_argument(ev)
    ev.add_argument("--out", default="runs/evaluate", help="output directory")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Score a fine-tuned model.pt; write metrics.json and predictions.csv."""
    out = check_writable(args.out)
    models = ModelSet(args.checkpoint, args.device, args.precision)
    models.check_uncertainty(args.uncertainty, args.samples)
    meta = models.meta
    dataset, name = load_labelled(args, meta["mode"])
    models.check_descriptors(attach_descriptors(dataset, args.descriptors), None)
    ours = (dataset.num_tasks, dataset.task_type, task_classes(dataset))
    theirs = (meta["num_tasks"], meta["task_type"], meta.get("num_classes"))
    if ours != theirs:

        def what(num_tasks: int, task_type: str, num_classes: int | None) -> str:
            classes = f" ({num_classes} classes each)" if num_classes else ""
            return f"{num_tasks} {task_type} targets{classes}"

        raise ValueError(
            f"Checkpoint {args.checkpoint!r} predicts {what(*theirs)}, dataset {name!r} has "
            f"{what(*ours)}"
        )
    everything = np.arange(len(dataset))
    split_name = args.split
    if args.split_file:
        split_name = "file"
        split = make_split(dataset, "scaffold", meta["seed"], args.split_file, args.split_sizes)
    elif args.split == "all":
        split = {"all": everything}
    elif args.split is not None:
        split = make_split(dataset, args.split, meta["seed"], None, args.split_sizes)
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
    results, predictions, spreads = {}, {}, {}
    for part, index in split.items():
        subset = dataset[torch.as_tensor(index, dtype=torch.long)]
        predictions[part], spreads[part] = models.predict(
            subset, args.batch_size, args.uncertainty, args.samples, progress=True
        )
        targets = stack_targets(subset, meta["num_tasks"])
        results[part] = compute_metrics(meta["task_type"], targets, predictions[part])
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
        "ensemble_size": len(models),
        "uncertainty": args.uncertainty,
        "skipped_invalid": len(dataset.skipped),
        "skipped_too_large": len(dataset.too_large),
        "version": __version__,
    }
    write_json(out / "metrics.json", metrics)
    write_predictions(
        str(out / "predictions.csv"),
        dataset,
        split[main],
        predictions[main],
        main,
        std=spreads[main],
    )
    print(
        f"{name}: {main} {metric} = {metrics['test']:.4f} ({split_name} split, "
        f"{len(split[main])} molecules); wrote {out}/metrics.json, predictions.csv"
    )
    return metrics
