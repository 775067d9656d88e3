"""``pyg-molblend finetune``: fine-tune and evaluate on a labelled dataset."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyg_molblend import __version__
from pyg_molblend.cli.common import (
    add_data_arguments,
    add_device_argument,
    attach_descriptors,
    default_checkpoint,
    load_labelled,
    make_split,
    num_descriptors,
    positive_int,
    probability,
    task_classes,
    write_predictions,
    write_split,
)
from pyg_molblend.datasets.utils import num_without_pos
from pyg_molblend.models import PRESETS, MoleBlend, MoleBlendPredictor, output_names
from pyg_molblend.training.checkpoint import (
    data_fingerprint,
    load_encoder,
    predictor_checkpoint,
    save_checkpoint,
)
from pyg_molblend.training.finetune import (
    FinetuneConfig,
    FinetuneResult,
    finetune,
    predict,
    stack_targets,
)
from pyg_molblend.training.io import check_writable, write_json
from pyg_molblend.training.metrics import METRICS, compute_metrics, one_vs_rest
from pyg_molblend.training.plots import (
    have_matplotlib,
    plot_learning_curve,
    plot_parity,
    plot_roc,
)
from pyg_molblend.training.utils import seed_everything
from pyg_molblend.transforms import SampleConformer

__all__ = [
    "add_arguments",
    "add_control_arguments",
    "add_model_arguments",
    "run",
    "train_member",
]


def add_arguments(subparsers: Any) -> None:
    ft = subparsers.add_parser("finetune", help="fine-tune and evaluate on a labelled dataset")
    ft.add_argument(
        "--config",
        help="JSON file of option values (e.g. the best_config.json of hpopt); options given "
        "on the command line win",
    )
    add_data_arguments(ft)
    add_model_arguments(ft)
    ft.add_argument("--epochs", type=positive_int, default=30)
    ft.add_argument("--batch-size", type=positive_int, default=32)
    ft.add_argument("--lr", type=float, default=3e-4)
    ft.add_argument("--weight-decay", type=float, default=0.0)
    ft.add_argument(
        "--dropout", type=probability, default=0.0, help="dropout before the task head (default: 0)"
    )
    ft.add_argument(
        "--freeze-encoder",
        action="store_true",
        help="train the task head only; the pretrained encoder is left as it is",
    )
    ft.add_argument(
        "--unfreeze-after",
        type=positive_int,
        metavar="EPOCHS",
        help="staged unfreezing: train the head alone for EPOCHS epochs, then everything",
    )
    ft.add_argument("--seed", type=int, default=0)
    add_control_arguments(ft)
    ft.add_argument(
        "--ensemble-size",
        type=positive_int,
        default=1,
        help="train N models (seeds --seed, --seed+1, ...) on the same split into "
        "model_0.pt ... model_<N-1>.pt; metrics and predictions are the members' mean, with "
        "their standard deviation as the uncertainty (default: 1, one model.pt)",
    )
    add_device_argument(ft, training=True)
    ft.add_argument("--out", default="runs/finetune", help="output directory")
    ft.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed run from the training state it left in --out "
        "(training_state.pt, written at the end of an epoch every --state-interval seconds "
        "and removed at the end), with the same options; the result is the uninterrupted "
        "run's",
    )
    ft.add_argument(
        "--state-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="write the training state at the end of an epoch once this many seconds have "
        "passed since the last write (default: 60; 0: after every epoch)",
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model's options (``--mode``, ``--checkpoint``, ``--from-scratch``,
    ``--num-conformers``, ``--preset``, ``--attn-dropout``), shared with ``hpopt``."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--mode",
        default="2d",
        choices=("2d", "3d", "2d+3d"),
        help="relations the model sees; 3D modes generate RDKit conformers",
    )
    group.add_argument(
        "--checkpoint",
        default=default_checkpoint(),
        help="pretrained weights: a checkpoint path or 'pretrained' "
        "(default: the shipped weights if present, else from scratch)",
    )
    group.add_argument("--from-scratch", action="store_true", help="ignore --checkpoint")
    group.add_argument(
        "--num-conformers",
        type=positive_int,
        default=1,
        metavar="K",
        help="3D modes: RDKit conformers per molecule; training sees one drawn at random "
        "each epoch, validation and test the first (MoleBLEND and Uni-Mol use 11) "
        "(default: 1)",
    )
    group.add_argument(
        "--preset",
        default="small",
        choices=sorted(PRESETS),
        help="model size when training from scratch (default: small)",
    )
    group.add_argument(
        "--attn-dropout",
        type=probability,
        default=0.1,
        help="dropout on the encoder's attention weights (default: 0.1, as in pretraining)",
    )


def add_control_arguments(parser: argparse.ArgumentParser) -> None:
    """Class weights, early stopping, the selection metric and descriptors, shared with
    ``hpopt``."""
    group = parser.add_argument_group("training controls")
    group.add_argument(
        "--class-weights",
        choices=("balanced",),
        help="weight each classification task's positives by n_negative / n_positive of "
        "the training set (multiclass: each class k by n / (K n_k))",
    )
    group.add_argument(
        "--patience",
        type=positive_int,
        help="stop after this many epochs without a better validation metric",
    )
    group.add_argument(
        "--metric",
        choices=sorted({m for names in METRICS.values() for m in names}),
        help="validation metric that selects the epoch (default: roc_auc for "
        "classification, cross_entropy for multiclass, rmse for regression)",
    )
    group.add_argument(
        "--descriptors",
        metavar="FILE",
        help="extra per-molecule features (.csv with a header, .npy or .npz), one row per "
        "data row of the input file, concatenated to the graph embedding",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Fine-tune, select on valid, evaluate on test; write model.pt (or the ensemble's
    model_<i>.pt), metrics.json and predictions.csv."""
    if args.from_scratch:
        args.checkpoint = None
    out = check_writable(args.out)
    seed_everything(args.seed)
    dataset, name = load_labelled(args, args.mode)
    attach_descriptors(dataset, args.descriptors)
    split = make_split(dataset, args.split, args.seed, args.split_file, args.split_sizes)
    subsets = {k: dataset[torch.as_tensor(v, dtype=torch.long)] for k, v in split.items()}
    size = args.ensemble_size
    members = []
    for member in range(size):
        seed = args.seed + member
        if member:  # member 0 is the single model of the same seed, bit for bit
            seed_everything(seed)
        state = out / ("training_state.pt" if size == 1 else f"training_state_{member}.pt")
        predictor, result = train_member(args, dataset, subsets, seed, state=state)
        path = out / ("model.pt" if size == 1 else f"model_{member}.pt")
        save_checkpoint(path, _checkpoint(args, predictor, dataset, name, split, seed))
        members.append((predictor, result, seed))
        if size > 1:
            print(
                f"member {member} (seed {seed}): valid {result.metric} = "
                f"{result.valid[result.metric]:.4f}, test {result.metric} = "
                f"{result.test[result.metric]:.4f}"
            )

    failures = num_without_pos(dataset) if args.mode != "2d" else 0
    result = members[0][1]
    metric = result.metric
    valid, test = result.valid, result.test
    test_pred, test_std = result.test_predictions, None
    assert test_pred is not None
    if size > 1:
        valid, _, _ = _ensemble(members, subsets["valid"], args)
        test, test_pred, test_std = _ensemble(members, subsets["test"], args)
    metrics = {
        "dataset": name,
        "task": dataset.task_type,
        "num_classes": task_classes(dataset),
        "metric": metric,
        "valid": valid[metric],
        "test": test[metric],
        "valid_metrics": valid,
        "test_metrics": test,
        "epochs": args.epochs,
        "best_epoch": result.best_epoch,
        "seconds": round(sum(r.seconds for _, r, _ in members), 2),
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
        # Every option of the run, as given (a --config file's values included), so that a
        # run can be repeated and runs compared.
        "settings": {k: v for k, v in vars(args).items() if k != "command"},
    }
    if size > 1:
        metrics["ensemble_size"] = size
        metrics["members"] = [
            {
                "file": f"model_{i}.pt",
                "seed": seed,
                "valid": r.valid[metric],
                "test": r.test[metric],
                "best_epoch": r.best_epoch,
                "valid_metrics": r.valid,
                "test_metrics": r.test,
                "history": r.history,
            }
            for i, (_, r, seed) in enumerate(members)
        ]
        del metrics["best_epoch"], metrics["history"]  # per member
    write_json(out / "metrics.json", metrics)
    write_predictions(
        str(out / "predictions.csv"), dataset, split["test"], test_pred, "test", std=test_std
    )
    write_split(out / "split.csv", dataset, split)
    plots = _plots(out, result, dataset, split["test"], test_pred)
    if failures:
        print(f"{failures} molecules had no conformer and were encoded in 2D")
    what = "model.pt" if size == 1 else f"model_0.pt ... model_{size - 1}.pt"
    print(
        f"{name}: valid {metric} = {metrics['valid']:.4f}, test {metric} = "
        f"{metrics['test']:.4f} ({'ensemble of ' + str(size) + ', ' if size > 1 else ''}"
        f"best epoch {result.best_epoch}, {metrics['seconds']:.0f} s); wrote "
        f"{out}/metrics.json, {what}, predictions.csv, split.csv{plots}"
    )
    return metrics


def _plots(
    out: Path, result: FinetuneResult, dataset: Any, test: np.ndarray, pred: np.ndarray
) -> str:
    """Draw the learning curve (of the first member) and the test parity plot or ROC
    curves; returns the files' names for the closing line, or says why there are none."""
    if not have_matplotlib():
        print("matplotlib is not installed, so no plots were drawn (pip install matplotlib)")
        return ""
    plot_learning_curve(result.history, result.metric, out / "learning_curve.png")
    targets = stack_targets(dataset[torch.as_tensor(test, dtype=torch.long)], dataset.num_tasks)
    if dataset.task_type == "regression":
        plot_parity(targets, pred, dataset.target_names, out / "parity.png")
        return ", learning_curve.png, parity.png"
    names = dataset.target_names
    if dataset.task_type == "multiclass":  # one-vs-rest: a curve per task and class
        targets = one_vs_rest(targets, dataset.num_classes)
        names = output_names(names, dataset.num_classes)
    plot_roc(targets, pred, names, out / "roc.png")
    return ", learning_curve.png, roc.png"


def train_member(
    args: argparse.Namespace,
    dataset: Any,
    subsets: dict[str, Any],
    seed: int,
    progress: bool = True,
    state: Path | None = None,
) -> tuple[MoleBlendPredictor, FinetuneResult]:
    """Fine-tune one model with the options of :obj:`args` on ``subsets["train"]``,
    selected on ``subsets["valid"]`` and evaluated on ``subsets["test"]`` if there is
    one (``hpopt`` gives none); the training state goes to :obj:`state` (every
    ``args.state_interval`` seconds, at the end of an epoch), and ``args.resume`` continues
    from it."""
    rates = {"attn_dropout": args.attn_dropout, "activation_dropout": 0.0, "drop_path": 0.0}
    if args.checkpoint:
        encoder = load_encoder(args.checkpoint, **rates)
    else:
        encoder = MoleBlend.from_preset(args.preset, **rates)
    predictor = MoleBlendPredictor(
        encoder,
        dataset.num_tasks,
        dataset.task_type,
        args.mode,
        dropout=args.dropout,
        num_descriptors=num_descriptors(dataset),
        num_classes=task_classes(dataset),
    )
    config = FinetuneConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=seed,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        num_workers=args.num_workers,
        progress=progress,
        freeze_encoder=args.freeze_encoder,
        unfreeze_after=args.unfreeze_after,
        class_weights=args.class_weights,
        patience=args.patience,
        metric=args.metric,
        state_path=None if state is None else str(state),
        resume=getattr(args, "resume", False),
        state_interval=getattr(args, "state_interval", 60.0),
    )
    train = subsets["train"]
    if args.num_conformers > 1:  # a new conformer per epoch; valid and test keep the first
        train = copy.copy(train)
        train.transform = SampleConformer()
    result = finetune(predictor, train, subsets["valid"], subsets.get("test"), config)
    return predictor, result


def _checkpoint(
    args: argparse.Namespace,
    predictor: MoleBlendPredictor,
    dataset: Any,
    name: str,
    split: dict[str, np.ndarray],
    seed: int,
) -> dict[str, Any]:
    return predictor_checkpoint(
        predictor,
        target_names=dataset.target_names,
        dataset=name,
        split="file" if args.split_file else args.split,
        seed=seed,
        pretrained_from=args.checkpoint,
        # The split as CSV data rows, with the data it applies to, so that ``evaluate``
        # scores exactly the molecules fine-tuning held out.
        split_rows={k: np.asarray(dataset.source_rows)[v].tolist() for k, v in split.items()},
        data_fingerprint=data_fingerprint(dataset),
    )


def _ensemble(
    members: list[tuple[MoleBlendPredictor, FinetuneResult, int]],
    subset: Any,
    args: argparse.Namespace,
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Metrics of the members' mean prediction on :obj:`subset`, the mean and the
    members' standard deviation."""
    runs = np.stack(
        [
            predict(p, subset, args.batch_size, args.device, precision=args.precision)
            for p, _, _ in members
        ]
    )
    mean = runs.mean(axis=0)
    task_type = members[0][0].task_type
    targets = stack_targets(subset, members[0][0].num_tasks)
    return compute_metrics(task_type, targets, mean), mean, runs.std(axis=0)
