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
from pyg_molblend.data import index_split, random_split, scaffold_split
from pyg_molblend.datasets import CSVDataset, MoleculeNet, default_dataset
from pyg_molblend.datasets.csv_dataset import SmilesTableDataset
from pyg_molblend.models import MoleBlend, MoleBlendPredictor
from pyg_molblend.training.checkpoint import (
    PRETRAINED_NAME,
    CheckpointError,
    load_checkpoint,
    load_encoder,
    save_checkpoint,
)
from pyg_molblend.training.finetune import FinetuneConfig, evaluate, finetune, seed_everything
from pyg_molblend.transforms import AddConformer, AddShortestPath

__all__ = ["add_data_arguments", "load_predictor", "run_evaluate", "run_finetune"]

#: Conformers of the 3D fine-tuning modes use this RDKit seed, whatever ``--seed`` is, so
#: every run of a dataset shares one cached copy.
CONFORMER_SEED = 0


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
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
        default=256,
        help="largest molecule accepted, in heavy atoms (default: 256)",
    )
    group.add_argument(
        "--split",
        default="scaffold",
        choices=("scaffold", "random"),
        help="split type (default: scaffold)",
    )
    group.add_argument("--split-file", help="JSON file with 'train', 'valid', 'test' index lists")
    group.add_argument(
        "--num-workers", type=int, default=0, help="processes for conformer generation (default: 0)"
    )


def _pre_transform(mode: str) -> T.Compose:
    steps: list[Any] = [AddShortestPath()]
    if mode != "2d":
        steps.append(AddConformer(seed=CONFORMER_SEED))
    return T.Compose(steps)


def load_labelled(args: argparse.Namespace, mode: str) -> tuple[SmilesTableDataset, str]:
    """The dataset named by the arguments, pre-transformed for :obj:`mode`, and its name."""
    pre = _pre_transform(mode)
    common = dict(pre_transform=pre, skip_invalid=args.skip_invalid, num_workers=args.num_workers)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The `pre_transform` argument differs")
        if args.csv:
            if not args.targets or not args.task:
                raise SystemExit("--csv needs --targets T1,T2 and --task classification|regression")
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
        dataset = default_dataset(args.root, pre_transform=pre, num_workers=args.num_workers)
        return dataset, "bbbp"


def _usable(dataset: SmilesTableDataset, max_atoms: int, skip: bool) -> tuple[np.ndarray, int]:
    """Indices of molecules within the atom limit (raising or counting the others)."""
    sizes = torch.as_tensor(dataset.slices["x"]).diff().numpy()
    too_large = np.nonzero(sizes > max_atoms)[0]
    if too_large.size and not skip:
        i = int(too_large[0])
        raise SystemExit(
            f"Molecule {i} ({dataset.smiles[i]!r}) has {sizes[i]} atoms, above --max-atoms "
            f"{max_atoms}; raise the limit or pass --skip-invalid"
        )
    if too_large.size:
        warnings.warn(f"Skipped {too_large.size} molecules above {max_atoms} atoms", stacklevel=2)
    return np.nonzero(sizes <= max_atoms)[0], int(too_large.size)


def make_split(
    dataset: SmilesTableDataset, usable: np.ndarray, split: str, seed: int, split_file: str | None
) -> dict[str, np.ndarray]:
    """Train/valid/test positions into :obj:`dataset` (only :obj:`usable` molecules)."""
    if split_file:
        with open(split_file) as f:
            given = json.load(f)
        missing = {"train", "valid", "test"} - set(given)
        if missing:
            raise SystemExit(f"--split-file {split_file!r} lacks {sorted(missing)}")
        parts = index_split(len(dataset), given["train"], given["valid"], given["test"])
        allowed = set(usable.tolist())
        return {
            name: np.array([i for i in part.tolist() if i in allowed])
            for name, part in zip(("train", "valid", "test"), parts, strict=True)
        }
    if split == "scaffold":
        smiles = [dataset.smiles[i] for i in usable]
        parts = scaffold_split(smiles)
    else:
        parts = random_split(len(usable), seed=seed)
    return {
        name: usable[part.numpy()]
        for name, part in zip(("train", "valid", "test"), parts, strict=True)
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
    names = dataset.target_names
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "split", "smiles", *names, *[f"{n}_pred" for n in names]])
        for row, i in enumerate(index):
            target = dataset[int(i)].y.view(-1).tolist()
            writer.writerow(
                [
                    int(i),
                    split,
                    dataset.smiles[int(i)],
                    *["" if np.isnan(t) else t for t in target],
                    *[f"{p:.6g}" for p in pred[row]],
                ]
            )


def _conformer_failures(dataset: SmilesTableDataset, index: np.ndarray) -> int:
    if "has_pos" not in dataset._data:
        return 0
    has_pos = dataset._data.has_pos.view(-1)
    return int((~has_pos[torch.as_tensor(index, dtype=torch.long)]).sum())


def run_finetune(args: argparse.Namespace) -> dict[str, Any]:
    seed_everything(args.seed)
    device = args.device
    dataset, name = load_labelled(args, args.mode)
    usable, too_large = _usable(dataset, args.max_atoms, args.skip_invalid)
    split = make_split(dataset, usable, args.split, args.seed, args.split_file)
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
    )
    subsets = {k: dataset[torch.as_tensor(v, dtype=torch.long)] for k, v in split.items()}
    result = finetune(predictor, subsets["train"], subsets["valid"], subsets["test"], config)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = _conformer_failures(dataset, usable) if args.mode != "2d" else 0
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
        "skipped_too_large": too_large,
        "conformer_failures": failures,
        "history": result.history,
        "version": __version__,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    save_checkpoint(out / "model.pt", _predictor_payload(predictor, dataset, name, args))
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
    predictor: MoleBlendPredictor, dataset: SmilesTableDataset, name: str, args: argparse.Namespace
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
            "split": args.split,
            "seed": args.seed,
            "pretrained_from": args.checkpoint,
        },
    }


def run_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    predictor, meta = load_predictor(args.checkpoint)
    predictor.to(args.device)
    dataset, name = load_labelled(args, meta["mode"])
    if dataset.num_tasks != meta["num_tasks"] or dataset.task_type != meta["task_type"]:
        raise SystemExit(
            f"Checkpoint {args.checkpoint!r} predicts {meta['num_tasks']} {meta['task_type']} "
            f"targets, dataset {name!r} has {dataset.num_tasks} {dataset.task_type} targets"
        )
    usable, too_large = _usable(dataset, args.max_atoms, args.skip_invalid)
    if args.split == "all":
        split = {"all": usable}
    else:
        split = make_split(dataset, usable, args.split, meta["seed"], args.split_file)
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
        "split": args.split,
        "checkpoint": args.checkpoint,
        "skipped_invalid": len(dataset.skipped),
        "skipped_too_large": too_large,
        "version": __version__,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _write_predictions(str(out / "predictions.csv"), dataset, split[main], predictions[main], main)
    print(f"{name}: {main} {metric} = {metrics['test']:.4f}; wrote {out}/metrics.json")
    return metrics


def default_checkpoint() -> str | None:
    """``pretrained`` when the package ships weights, else :obj:`None` (from scratch)."""
    from pyg_molblend.training.checkpoint import resolve_checkpoint

    try:
        resolve_checkpoint(PRETRAINED_NAME)
    except CheckpointError:
        return None
    return PRETRAINED_NAME
