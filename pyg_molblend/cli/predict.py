"""``pyg-molblend predict``: predictions of a fine-tuned model (or ensemble) for new
molecules, no labels needed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pyg_molblend.cli.common import add_device_argument, add_smiles_file_arguments, positive_int
from pyg_molblend.training.inference import UNCERTAINTY, ModelSet, predict_file
from pyg_molblend.training.io import check_writable
from pyg_molblend.transforms import read_descriptors

__all__ = ["add_arguments", "run"]


def add_arguments(subparsers: Any) -> None:
    pr = subparsers.add_parser(
        "predict", help="predict new molecules with a fine-tuned model.pt or ensemble folder"
    )
    pr.add_argument(
        "--checkpoint",
        required=True,
        help="model.pt written by finetune, or its output folder (an ensemble is averaged)",
    )
    add_smiles_file_arguments(pr, "predicted", "its other columns are kept")
    pr.add_argument("--out", required=True, help="output CSV")
    pr.add_argument(
        "--uncertainty",
        choices=UNCERTAINTY,
        help="add <task>_std columns: the ensemble members' spread, or Monte Carlo dropout",
    )
    pr.add_argument(
        "--samples", type=positive_int, default=10, help="dropout samples per model (default: 10)"
    )
    pr.add_argument("--batch-size", type=positive_int, default=64)
    pr.add_argument(
        "--skip-invalid",
        action="store_true",
        help="give invalid or too-large molecules an empty prediction and a status instead "
        "of failing",
    )
    pr.add_argument(
        "--descriptors",
        metavar="FILE",
        help="per-molecule descriptors for a model fine-tuned with --descriptors: .csv with "
        "a header, .npy or .npz, one row per molecule of --smiles, in order",
    )
    pr.add_argument("--seed", type=int, default=0, help="seed of the dropout samples")
    add_device_argument(pr)


def run(args: argparse.Namespace) -> dict[str, int]:
    """Write one prediction row per input row to ``--out``."""
    out = Path(args.out)
    check_writable(out.parent)
    # A wrong checkpoint or uncertainty fails before any molecule is read.
    models = ModelSet(args.checkpoint, args.device, args.precision)
    models.check_uncertainty(args.uncertainty, args.samples)
    descriptors = read_descriptors(args.descriptors) if args.descriptors else None
    models.check_descriptors(descriptors, None)
    counts = predict_file(
        args.smiles,
        models,
        out,
        smiles_column=args.smiles_column,
        chunk_size=args.chunk_size,
        uncertainty=args.uncertainty,
        samples=args.samples,
        batch_size=args.batch_size,
        skip_invalid=args.skip_invalid,
        max_atoms=args.max_atoms,
        seed=args.seed,
        descriptors=descriptors,
        num_workers=args.num_workers,
    )
    total = sum(counts.values())
    predicted = counts["ok"] + counts["ok_2d_fallback"]
    print(f"predicted {predicted} of {total} molecules; wrote {out}")
    return counts
