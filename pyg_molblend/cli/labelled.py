"""``finetune`` and ``evaluate``: labelled datasets, splits, metrics files."""

from __future__ import annotations

import argparse
import csv
import json
import os.path as osp
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_geometric.transforms as T

from pyg_molblend import __version__
from pyg_molblend.constants import DEFAULT_MAX_ATOMS
from pyg_molblend.data import index_split, random_split, scaffold_split
from pyg_molblend.datasets import CSVDataset, MoleculeNet, default_dataset
from pyg_molblend.datasets.csv_dataset import SmilesTableDataset
from pyg_molblend.models import MoleBlend, MoleBlendPredictor
from pyg_molblend.training.checkpoint import (
    PRETRAINED_NAME,
    CheckpointError,
    data_fingerprint,
    load_checkpoint,
    load_encoder,
    save_checkpoint,
)
from pyg_molblend.training.finetune import FinetuneConfig, evaluate, finetune
from pyg_molblend.training.io import atomic_write, check_writable, write_json
from pyg_molblend.training.utils import seed_everything
from pyg_molblend.transforms import AddConformer, AddShortestPath

__all__ = ["add_data_arguments", "load_predictor", "run_evaluate", "run_finetune"]

#: Conformers of the 3D fine-tuning modes use this RDKit seed, whatever ``--seed`` is, so
#: every run of a dataset shares one cached copy.
CONFORMER_SEED = 0


def add_data_arguments(parser: argparse.ArgumentParser, evaluate: bool = False) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", help="MoleculeNet name (bbbp, bace, esol, ...)")
    group.add_argument("--root", default="data", help="dataset directory (default: data)")
    group.add_argument("--csv", help="a CSV file with a SMILES column and target columns")
    group.add_argument("--smiles-column", default="smiles", help="SMILES column of --csv")
    group.add_argument("--targets", help="comma-separated target columns of --csv")
    group.add_argument("--task", choices=("classification", "regression"), help="task of --csv")
    group.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip invalid SMILES and too-large molecules (counted) instead of failing",
    )
    group.add_argument(
        "--max-atoms",
        type=int,
        default=DEFAULT_MAX_ATOMS,
        help=f"largest molecule accepted, in heavy atoms (default: {DEFAULT_MAX_ATOMS})",
    )
    if evaluate:
        group.add_argument(
            "--split",
            default=None,
            choices=("scaffold", "random", "all"),
            help="molecules to score: 'all', or a split rule (default: the split the model "
            "was fine-tuned with when the data is the same, else all)",
        )
    else:
        group.add_argument(
            "--split",
            default="scaffold",
            choices=("scaffold", "random"),
            help="split type (default: scaffold)",
        )
    group.add_argument(
        "--split-file",
        help="JSON file with 'train', 'valid', 'test' lists of CSV data rows (0-based, the "
        "header not counted: the first molecule is 0); rows skipped as invalid are left out "
        "and counted",
    )
    group.add_argument(
        "--force-reload",
        action="store_true",
        help="rebuild the processed cache under --root instead of reusing it",
    )
    group.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="processes for conformer generation and for loading batches (default: 0)",
    )


def _pre_transform(mode: str) -> T.Compose:
    steps: list[Any] = [AddShortestPath()]
    if mode != "2d":
        steps.append(AddConformer(seed=CONFORMER_SEED))
    return T.Compose(steps)


def load_labelled(args: argparse.Namespace, mode: str) -> tuple[SmilesTableDataset, str]:
    """The dataset named by the arguments, pre-transformed for :obj:`mode`, and its name."""
    pre = _pre_transform(mode)
    common = dict(
        pre_transform=pre,
        force_reload=args.force_reload,
        skip_invalid=args.skip_invalid,
        max_atoms=args.max_atoms,
        num_workers=args.num_workers,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The `pre_transform` argument differs")
        if args.csv:
            if not args.targets or not args.task:
                raise ValueError("--csv needs --targets T1,T2 and --task classification|regression")
            stem = Path(args.csv).name.split(".")[0]
            dataset = CSVDataset(
                osp.join(args.root, "csv", stem),
                args.csv,
                args.smiles_column,
                [t.strip() for t in args.targets.split(",") if t.strip()],
                args.task,
                **common,
            )
            return dataset, stem
        if args.dataset:
            return MoleculeNet(args.root, args.dataset, **common), args.dataset.lower()
        common["skip_invalid"] = True  # the shipped BBBP has 11 SMILES RDKit rejects
        return default_dataset(args.root, **common), "bbbp"


def _num_rows(dataset: SmilesTableDataset) -> int:
    """Data rows of the input file: the molecules kept and those skipped, for any reason."""
    return len(dataset) + len(dataset.skipped) + len(dataset.too_large) + len(dataset.unlabeled)


def _read_split_file(path: str) -> dict[str, list[int]]:
    try:
        with open(path) as f:
            given = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"--split-file not found: {path!r}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"--split-file {path!r} is not valid JSON: {error}") from None
    if not isinstance(given, dict):
        raise ValueError(f"--split-file {path!r} must hold an object with 'train', 'valid', 'test'")
    missing = {"train", "valid", "test"} - set(given)
    if missing:
        raise ValueError(f"--split-file {path!r} lacks {sorted(missing)}")
    for name in ("train", "valid", "test"):  # the rows themselves: index_split checks them
        if not isinstance(given[name], list):
            raise ValueError(f"--split-file {path!r}: {name!r} must be a list of row numbers")
    return {name: given[name] for name in ("train", "valid", "test")}


def rows_to_positions(
    dataset: SmilesTableDataset, rows: dict[str, list[int]], source: str
) -> dict[str, np.ndarray]:
    """Positions in :obj:`dataset` of the CSV data rows of each part (validated: no row
    twice, none past the end); rows dropped as invalid, too large or unlabelled are
    counted in one warning."""
    num_rows = _num_rows(dataset)
    try:  # range and overlap checks, naming the row
        index_split(num_rows, *rows.values())
    except ValueError as error:
        raise ValueError(f"{source}: {error} (data rows are 0 to {num_rows - 1})") from None
    position = {row: i for i, row in enumerate(dataset.source_rows)}
    parts, dropped = {}, 0
    for name, part in rows.items():
        kept = [position[r] for r in part if r in position]
        dropped += len(part) - len(kept)
        parts[name] = np.array(kept, dtype=np.int64)
    if dropped:
        warnings.warn(
            f"{dropped} rows of {source} are not in the data (skipped as invalid, too "
            "large or unlabelled) and were left out",
            stacklevel=2,
        )
    return parts


def make_split(
    dataset: SmilesTableDataset, split: str, seed: int, split_file: str | None
) -> dict[str, np.ndarray]:
    """Train/valid/test positions into :obj:`dataset`."""
    if split_file:
        return rows_to_positions(
            dataset, _read_split_file(split_file), f"--split-file {split_file!r}"
        )
    if split == "scaffold":
        parts = scaffold_split(dataset.smiles)
    else:
        parts = random_split(len(dataset), seed=seed)
    return {
        name: part.numpy() for name, part in zip(("train", "valid", "test"), parts, strict=True)
    }


def load_predictor(path: str) -> tuple[MoleBlendPredictor, dict[str, Any]]:
    """A fine-tuned model saved by ``finetune`` (``model.pt``) and its metadata."""
    payload = load_checkpoint(path, kind="predictor")
    meta = payload["predictor"]
    predictor = MoleBlendPredictor(
        load_encoder(path), meta["num_tasks"], meta["task_type"], meta["mode"]
    )
    try:
        predictor.load_state_dict(payload["head_state"], strict=False)
    except RuntimeError as error:
        raise CheckpointError(f"Checkpoint {path!r} head does not fit: {error}") from error
    return predictor, meta


def _write_predictions(
    path: str, dataset: SmilesTableDataset, index: np.ndarray, pred: np.ndarray, split: str
) -> None:
    """One line per molecule: its CSV data ``row`` (as ``--split-file`` counts rows), the
    split, the SMILES, the targets (empty where missing) and the predictions."""
    names = dataset.target_names
    smiles, rows = dataset.smiles, dataset.source_rows
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "split", "smiles", *names, *[f"{n}_pred" for n in names]])
        for k, i in enumerate(index.tolist()):
            target = dataset[i].y.view(-1).tolist()
            writer.writerow(
                [
                    rows[i],
                    split,
                    smiles[i],
                    *["" if np.isnan(t) else t for t in target],
                    *[f"{p:.6g}" for p in pred[k]],
                ]
            )


def _conformer_failures(dataset: SmilesTableDataset) -> int:
    if "has_pos" not in dataset._data:
        return 0
    return int((~dataset._data.has_pos.view(-1)[: len(dataset)]).sum())


def run_finetune(args: argparse.Namespace) -> dict[str, Any]:
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

    failures = _conformer_failures(dataset) if args.mode != "2d" else 0
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
    save_checkpoint(out / "model.pt", _predictor_payload(predictor, dataset, name, split, args))
    write_json(out / "metrics.json", metrics)
    assert result.test_predictions is not None
    _write_predictions(
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


def _predictor_payload(
    predictor: MoleBlendPredictor,
    dataset: SmilesTableDataset,
    name: str,
    split: dict[str, np.ndarray],
    args: argparse.Namespace,
) -> dict[str, Any]:
    state = predictor.state_dict()
    return {
        "kind": "predictor",
        "encoder_config": predictor.encoder.config,
        "encoder_state": {
            k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")
        },
        "head_state": {k: v for k, v in state.items() if not k.startswith("encoder.")},
        "predictor": {
            "num_tasks": predictor.num_tasks,
            "task_type": predictor.task_type,
            "mode": predictor.mode,
            "target_names": dataset.target_names,
            "dataset": name,
            "split": "file" if args.split_file else args.split,
            "seed": args.seed,
            "pretrained_from": args.checkpoint,
            # The split as CSV data rows, with the data it applies to, so that
            # ``evaluate`` scores exactly the molecules fine-tuning held out.
            "split_rows": {
                k: np.asarray(dataset.source_rows)[v].tolist() for k, v in split.items()
            },
            "data_fingerprint": data_fingerprint(dataset),
        },
    }


def run_evaluate(args: argparse.Namespace) -> dict[str, Any]:
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
    metric = "roc_auc" if meta["task_type"] == "classification" else "rmse"
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
    _write_predictions(str(out / "predictions.csv"), dataset, split[main], predictions[main], main)
    print(
        f"{name}: {main} {metric} = {metrics['test']:.4f} ({split_name} split, "
        f"{len(split[main])} molecules); wrote {out}/metrics.json, predictions.csv"
    )
    return metrics


def default_checkpoint() -> str | None:
    """``pretrained`` when the package ships weights, else :obj:`None` (from scratch)."""
    from pyg_molblend.training.checkpoint import resolve_checkpoint

    try:
        resolve_checkpoint(PRETRAINED_NAME)
    except CheckpointError:
        return None
    return PRETRAINED_NAME
