"""``pyg-molblend finetune``: fine-tune and evaluate on a labelled dataset."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from pyg_molblend import __version__
from pyg_molblend.cli.common import (
    add_data_arguments,
    add_device_argument,
    default_checkpoint,
    load_labelled,
    make_split,
    write_predictions,
)
from pyg_molblend.datasets.utils import num_without_pos
from pyg_molblend.models import PRESETS, MoleBlend, MoleBlendPredictor
from pyg_molblend.training.checkpoint import (
    data_fingerprint,
    load_encoder,
    predictor_checkpoint,
    save_checkpoint,
)
from pyg_molblend.training.finetune import FinetuneConfig, finetune
from pyg_molblend.training.io import check_writable, write_json
from pyg_molblend.training.utils import seed_everything

__all__ = ["add_arguments", "run"]


def add_arguments(subparsers: Any) -> None:
    ft = subparsers.add_parser("finetune", help="fine-tune and evaluate on a labelled dataset")
    add_data_arguments(ft)
    ft.add_argument(
        "--mode",
        default="2d",
        choices=("2d", "3d", "2d+3d"),
        help="relations the model sees; 3D modes generate RDKit conformers",
    )
    ft.add_argument(
        "--checkpoint",
        default=default_checkpoint(),
        help="pretrained weights: a checkpoint path or 'pretrained' "
        "(default: the shipped weights if present, else from scratch)",
    )
    ft.add_argument("--from-scratch", action="store_true", help="ignore --checkpoint")
    ft.add_argument(
        "--preset",
        default="small",
        choices=sorted(PRESETS),
        help="model size when training from scratch (default: small)",
    )
    ft.add_argument("--epochs", type=int, default=30)
    ft.add_argument("--batch-size", type=int, default=32)
    ft.add_argument("--lr", type=float, default=3e-4)
    ft.add_argument("--weight-decay", type=float, default=0.0)
    ft.add_argument("--seed", type=int, default=0)
    add_device_argument(ft)
    ft.add_argument("--out", default="runs/finetune", help="output directory")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Fine-tune, select on valid, evaluate on test; write model.pt, metrics.json and
    predictions.csv."""
    if args.from_scratch:
        args.checkpoint = None
    out = check_writable(args.out)
    seed_everything(args.seed)
    device = args.device
    dataset, name = load_labelled(args, args.mode)
    split = make_split(dataset, args.split, args.seed, args.split_file)
    if args.checkpoint:
        encoder = load_encoder(args.checkpoint, activation_dropout=0.0, drop_path=0.0)
    else:
        encoder = MoleBlend.from_preset(args.preset, activation_dropout=0.0, drop_path=0.0)
    predictor = MoleBlendPredictor(encoder, dataset.num_tasks, dataset.task_type, args.mode)
    config = FinetuneConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        device=device,
        num_workers=args.num_workers,
    )
    subsets = {k: dataset[torch.as_tensor(v, dtype=torch.long)] for k, v in split.items()}
    result = finetune(predictor, subsets["train"], subsets["valid"], subsets["test"], config)

    failures = num_without_pos(dataset) if args.mode != "2d" else 0
    metrics = {
        "dataset": name,
        "task": dataset.task_type,
        "metric": result.metric,
        "valid": result.valid[result.metric],
        "test": result.test[result.metric],
        "valid_metrics": result.valid,
        "test_metrics": result.test,
        "epochs": args.epochs,
        "best_epoch": result.best_epoch,
        "seconds": round(result.seconds, 2),
        "seed": args.seed,
        "mode": args.mode,
        "split": "file" if args.split_file else args.split,
        "num_train": len(split["train"]),
        "num_valid": len(split["valid"]),
        "num_test": len(split["test"]),
        "checkpoint": args.checkpoint,
        "skipped_invalid": len(dataset.skipped),
        "skipped_too_large": len(dataset.too_large),
        "conformer_failures": failures,
        "history": result.history,
        "version": __version__,
    }
    checkpoint = predictor_checkpoint(
        predictor,
        target_names=dataset.target_names,
        dataset=name,
        split="file" if args.split_file else args.split,
        seed=args.seed,
        pretrained_from=args.checkpoint,
        # The split as CSV data rows, with the data it applies to, so that ``evaluate``
        # scores exactly the molecules fine-tuning held out.
        split_rows={k: np.asarray(dataset.source_rows)[v].tolist() for k, v in split.items()},
        data_fingerprint=data_fingerprint(dataset),
    )
    save_checkpoint(out / "model.pt", checkpoint)
    write_json(out / "metrics.json", metrics)
    assert result.test_predictions is not None
    write_predictions(
        str(out / "predictions.csv"), dataset, split["test"], result.test_predictions, "test"
    )
    if failures:
        print(f"{failures} molecules had no conformer and were encoded in 2D")
    print(
        f"{name}: valid {result.metric} = {metrics['valid']:.4f}, "
        f"test {result.metric} = {metrics['test']:.4f} (best epoch {result.best_epoch}, "
        f"{metrics['seconds']:.0f} s); wrote {out}/metrics.json, model.pt, predictions.csv"
    )
    return metrics
