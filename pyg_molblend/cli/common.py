"""What the subcommands share: the labelled-data arguments and their loading, splits,
predictions files, ``--device`` and the default checkpoint."""

from __future__ import annotations

import argparse
import csv
import json
import os
import os.path as osp
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_geometric.transforms as T

from pyg_molblend.constants import DEFAULT_MAX_ATOMS, TASK_TYPES
from pyg_molblend.data import index_split, random_split, scaffold_split
from pyg_molblend.datasets import CSVDataset, MoleculeNet, default_dataset
from pyg_molblend.datasets.csv_dataset import SmilesTableDataset
from pyg_molblend.models import output_names
from pyg_molblend.training.checkpoint import PRETRAINED_NAME, CheckpointError
from pyg_molblend.training.io import atomic_write
from pyg_molblend.training.utils import PRECISIONS
from pyg_molblend.transforms import (
    AddConformer,
    AddDescriptors,
    AddShortestPath,
    read_descriptors,
)

__all__ = [
    "add_data_arguments",
    "add_device_argument",
    "attach_descriptors",
    "default_checkpoint",
    "device_type",
    "load_labelled",
    "make_split",
    "num_descriptors",
    "positive_int",
    "read_json",
    "rows_to_positions",
    "write_predictions",
    "write_split",
]

#: Default train/valid/test fractions of a split rule.
SPLIT_SIZES = (0.8, 0.1, 0.1)

#: Conformers of the 3D fine-tuning modes use this RDKit seed, whatever ``--seed`` is, so
#: every run of a dataset shares one cached copy.
CONFORMER_SEED = 0


def device_type(text: str) -> str:
    """``--device``: ``auto`` is CUDA when a device is visible, else the CPU; anything
    else must be a device name torch knows (``cpu``, ``cuda``, ``cuda:1``, ...).

    Examples:
        >>> device_type("cpu")
        'cpu'
        >>> device_type("auto") in ("cpu", "cuda")
        True
        >>> try:
        ...     device_type("gpu0")
        ... except argparse.ArgumentTypeError as error:
        ...     print(error)
        unknown device 'gpu0'
    """
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"device {text!r}: no CUDA device is visible")
    return text


def positive_int(text: str) -> int:
    """An option that counts something: an integer of at least 1.

    Examples:
        >>> positive_int("3")
        3
        >>> try:
        ...     positive_int("0")
        ... except argparse.ArgumentTypeError as error:
        ...     print(error)
        must be at least 1, got 0
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def probability(text: str) -> float:
    """A dropout rate: a number in [0, 1).

    Examples:
        >>> probability("0.1")
        0.1
        >>> try:
        ...     probability("1")
        ... except argparse.ArgumentTypeError as error:
        ...     print(error)
        must be in [0, 1), got 1.0
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def add_smiles_file_arguments(parser: argparse.ArgumentParser, done: str, kept: str) -> None:
    """``--smiles``, ``--smiles-column``, ``--chunk-size``, ``--max-atoms`` and
    ``--num-workers``: the SMILES file that ``predict`` and ``embed`` stream, :obj:`done`
    (``"predicted"``) to each chunk, :obj:`kept` saying what of the input the output
    keeps, and the processes that featurize it."""
    parser.add_argument(
        "--smiles",
        required=True,
        help=f"CSV/TSV with a SMILES column, or .smi/.txt, optionally .gz/.bz2/.xz ({kept})",
    )
    parser.add_argument(
        "--smiles-column", help="SMILES column of a CSV (default: 'smiles', any case)"
    )
    parser.add_argument(
        "--chunk-size",
        type=positive_int,
        default=10_000,
        help=f"rows read, {done} and written at a time (default: 10000)",
    )
    parser.add_argument(
        "--max-atoms",
        type=int,
        default=DEFAULT_MAX_ATOMS,
        help=f"largest molecule accepted, in heavy atoms (default: {DEFAULT_MAX_ATOMS})",
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="processes that featurize the molecules (RDKit, shortest paths, conformers of "
        f"3D modes) before this one has them {done}; the same output (default: 0)",
    )


def add_device_argument(parser: argparse.ArgumentParser, training: bool = False) -> None:
    """``--device`` and ``--precision``, the two options of where and in what arithmetic a
    command computes (the pair is checked before any data is read), and for a
    :obj:`training` command ``--compile``."""
    parser.add_argument(
        "--device",
        type=device_type,
        default="auto",
        help="cpu, cuda, cuda:N, or auto: CUDA when present (default: auto)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="arithmetic: fp32; tf32 (CUDA matrix products on TF32 tensor cores); bf16 "
        "(autocast to bfloat16, weights and losses in fp32; on a CPU often slower than "
        "fp32, so time it first) (default: fp32)",
    )
    if training:
        parser.add_argument(
            "--compile",
            action="store_true",
            help="compile the encoder's transformer layers with torch.compile (dynamic "
            "shapes), for CUDA; on a CPU it is slower (default: off)",
        )


def add_data_arguments(parser: argparse.ArgumentParser, evaluate: bool = False) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", help="MoleculeNet name (bbbp, bace, esol, ...)")
    group.add_argument("--root", default="data", help="dataset directory (default: data)")
    group.add_argument("--csv", help="a CSV file with a SMILES column and target columns")
    group.add_argument("--smiles-column", default="smiles", help="SMILES column of --csv")
    group.add_argument("--targets", help="comma-separated target columns of --csv")
    group.add_argument("--task", choices=TASK_TYPES, help="task of --csv")
    group.add_argument(
        "--num-classes",
        type=positive_int,
        help="classes per task of a --task multiclass --csv (labels 0 to K - 1; default: the "
        "largest label plus one)",
    )
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
        "--split-sizes",
        type=float,
        nargs=3,
        default=list(SPLIT_SIZES),
        metavar=("TRAIN", "VALID", "TEST"),
        help="fractions of the split rule, summing to 1 (default: 0.8 0.1 0.1)",
    )
    group.add_argument(
        "--split-file",
        help="the split.csv a finetune run wrote (columns row,split), or a JSON file with "
        "'train', 'valid', 'test' lists of CSV data rows (0-based, the header not counted: "
        "the first molecule is 0); rows skipped as invalid are left out and counted",
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


def _pre_transform(mode: str, num_conformers: int = 1) -> T.Compose:
    steps: list[Any] = [AddShortestPath()]
    if mode != "2d":
        steps.append(AddConformer(seed=CONFORMER_SEED, num_conformers=num_conformers))
    return T.Compose(steps)


def load_labelled(args: argparse.Namespace, mode: str) -> tuple[SmilesTableDataset, str]:
    """The dataset named by the arguments, pre-transformed for :obj:`mode` (with
    ``args.num_conformers`` conformers per molecule where the command has that option),
    and its name.

    Raises:
        ValueError: for ``--num-conformers`` above 1 in the 2D mode, which uses none.
    """
    num_conformers = getattr(args, "num_conformers", 1)
    if num_conformers > 1 and mode == "2d":
        raise ValueError(
            f"--num-conformers {num_conformers} needs a 3D mode (--mode 2d+3d or 3d); "
            "--mode 2d uses no conformer"
        )
    pre = _pre_transform(mode, num_conformers)
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
                raise ValueError(
                    "--csv needs --targets T1,T2 and --task classification|multiclass|regression"
                )
            if args.num_classes is not None and args.task != "multiclass":
                raise ValueError(
                    f"--num-classes {args.num_classes} is for --task multiclass, not "
                    f"--task {args.task}"
                )
            if args.task == "multiclass":
                common["num_classes"] = args.num_classes
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


def attach_descriptors(dataset: SmilesTableDataset, path: str | None) -> np.ndarray | None:
    """Give every graph of :obj:`dataset` the descriptors of its data row from the file
    :obj:`path` (as the dataset's transform :class:`~pyg_molblend.transforms.AddDescriptors`);
    returns the table, :obj:`None` without a file (for a model's check,
    :meth:`~pyg_molblend.training.inference.ModelSet.check_descriptors`).

    Every row the dataset uses is checked now, so that a bad value fails before training.

    Raises:
        ValueError: naming the file for a row count other than the data file's, or a NaN
            or infinite value in a row the dataset uses.
    """
    if path is None:
        return None
    table = read_descriptors(path)
    rows = _num_rows(dataset)
    if table.shape[0] != rows:
        raise ValueError(
            f"Descriptor file {path!r} has {table.shape[0]} rows, but the data file has "
            f"{rows} data rows; it needs one row per data row, in the same order"
        )
    used = table[np.asarray(dataset.source_rows, dtype=np.int64)]
    bad = ~np.isfinite(used)
    if bad.any():
        k, column = map(int, np.argwhere(bad)[0])
        raise ValueError(
            f"Descriptor file {path!r}: column {column} of data row {dataset.source_rows[k]} "
            f"({dataset.smiles[k]!r}) is {used[k, column]}; descriptors must be finite"
        )
    dataset.transform = AddDescriptors(table)
    return table


def num_descriptors(dataset: Any) -> int:
    """Descriptors per molecule that :func:`attach_descriptors` gave :obj:`dataset` (or a
    subset of it), else 0."""
    transform = getattr(dataset, "transform", None)
    return transform.num_descriptors if isinstance(transform, AddDescriptors) else 0


def _num_rows(dataset: SmilesTableDataset) -> int:
    """Data rows of the input file: the molecules kept and those skipped, for any reason."""
    return len(dataset) + len(dataset.skipped) + len(dataset.too_large) + len(dataset.unlabeled)


def read_json(path: str, option: str) -> Any:
    """The JSON value in the file :obj:`path` given as :obj:`option`.

    Raises:
        ValueError: naming :obj:`option` and the file when it is missing or not JSON.
    """
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{option} not found: {path!r}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{option} {path!r} is not valid JSON: {error}") from None


def _read_split_file(path: str) -> dict[str, list[int]]:
    if path.lower().endswith(".csv"):
        return _read_split_csv(path)
    given = read_json(path, "--split-file")
    if not isinstance(given, dict):
        raise ValueError(f"--split-file {path!r} must hold an object with 'train', 'valid', 'test'")
    missing = {"train", "valid", "test"} - set(given)
    if missing:
        raise ValueError(f"--split-file {path!r} lacks {sorted(missing)}")
    for name in ("train", "valid", "test"):  # the rows themselves: index_split checks them
        if not isinstance(given[name], list):
            raise ValueError(f"--split-file {path!r}: {name!r} must be a list of row numbers")
    return {name: given[name] for name in ("train", "valid", "test")}


def _read_split_csv(path: str) -> dict[str, list[int]]:
    """A ``row,split`` table (what :func:`write_split` writes) as rows per part."""
    from pyg_molblend.datasets.csv_dataset import read_csv_table

    if not osp.isfile(path):
        raise ValueError(f"--split-file not found: {path!r}")
    table = read_csv_table(path)
    if not {"row", "split"} <= set(table.columns):
        raise ValueError(
            f"--split-file {path!r} needs columns 'row' and 'split'; it has {list(table.columns)}"
        )
    parts: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    for line, row, part in zip(table.index, table["row"], table["split"], strict=True):
        if part not in parts:
            raise ValueError(
                f"--split-file {path!r}, line {line}: split {part!r} is not train, valid or test"
            )
        try:
            parts[part].append(int(row))
        except ValueError:
            raise ValueError(
                f"--split-file {path!r}, line {line}: row {row!r} is not a row number"
            ) from None
    return parts


def write_split(path: str | os.PathLike, dataset: SmilesTableDataset, split: dict) -> None:
    """The split as ``row,split`` lines in row order: each molecule's CSV data row (as
    ``--split-file`` counts rows) and its part; ``--split-file`` reads it back."""
    rows = np.asarray(dataset.source_rows)
    lines = sorted((int(rows[i]), part) for part, index in split.items() for i in index)
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "split"])
        writer.writerows(lines)


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
    dataset: SmilesTableDataset,
    split: str,
    seed: int,
    split_file: str | None,
    sizes: Sequence[float] = SPLIT_SIZES,
) -> dict[str, np.ndarray]:
    """Train/valid/test positions into :obj:`dataset`: from a split file, or by the rule
    :obj:`split` with the fractions :obj:`sizes`."""
    if split_file:
        return rows_to_positions(
            dataset, _read_split_file(split_file), f"--split-file {split_file!r}"
        )
    try:
        if split == "scaffold":
            parts = scaffold_split(dataset.smiles, *sizes)
        else:
            parts = random_split(len(dataset), *sizes, seed=seed)
    except ValueError as error:
        raise ValueError(f"--split-sizes {' '.join(map(str, sizes))}: {error}") from None
    return {
        name: part.numpy() for name, part in zip(("train", "valid", "test"), parts, strict=True)
    }


def write_predictions(
    path: str,
    dataset: SmilesTableDataset,
    index: np.ndarray,
    pred: np.ndarray,
    split: str,
    std: np.ndarray | None = None,
) -> None:
    """One line per molecule: its CSV data ``row`` (as ``--split-file`` counts rows), the
    split, the SMILES, the targets (empty where missing), the predictions (``<task>_pred``;
    multiclass: ``<task>_class_<k>_pred`` per class) and, for an ensemble or dropout
    samples, their standard deviations (``<task>_std``, ``<task>_class_<k>_std``)."""
    names = dataset.target_names
    outputs = output_names(names, task_classes(dataset))
    smiles, rows = dataset.smiles, dataset.source_rows
    spread = [f"{n}_std" for n in outputs] if std is not None else []
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["row", "split", "smiles", *names, *[f"{n}_pred" for n in outputs], *spread]
        )
        for k, i in enumerate(index.tolist()):
            target = dataset[i].y.view(-1).tolist()
            writer.writerow(
                [
                    rows[i],
                    split,
                    smiles[i],
                    *["" if np.isnan(t) else t for t in target],
                    *[f"{p:.6g}" for p in pred[k]],
                    *([f"{s:.6g}" for s in std[k]] if std is not None else []),
                ]
            )


def task_classes(dataset: SmilesTableDataset) -> int | None:
    """Classes per task of a multiclass dataset, else :obj:`None` (what
    :class:`~pyg_molblend.models.MoleBlendPredictor` takes as ``num_classes``)."""
    return dataset.num_classes if dataset.task_type == "multiclass" else None


def default_checkpoint() -> str | None:
    """``pretrained`` when the package ships weights, else :obj:`None` (from scratch).

    Examples:
        >>> default_checkpoint()  # this installation ships weights
        'pretrained'
    """
    from pyg_molblend.training.checkpoint import resolve_checkpoint

    try:
        resolve_checkpoint(PRETRAINED_NAME)
    except CheckpointError:
        return None
    return PRETRAINED_NAME
