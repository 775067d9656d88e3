"""``embed``: one graph embedding per input SMILES, in input order."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyg_molblend.cli.common import add_device_argument
from pyg_molblend.constants import DEFAULT_MAX_ATOMS
from pyg_molblend.datasets import featurize_smiles
from pyg_molblend.datasets.smiles import read_smiles_lines
from pyg_molblend.training.checkpoint import load_checkpoint, load_encoder
from pyg_molblend.training.finetune import map_batches
from pyg_molblend.training.io import atomic_path, check_writable
from pyg_molblend.transforms import AddConformer, AddShortestPath

__all__ = ["add_arguments", "embed_smiles", "run"]


@torch.no_grad()
def embed_smiles(
    checkpoint: str,
    smiles: list[str],
    mode: str | None = None,
    batch_size: int = 64,
    skip_invalid: bool = False,
    device: str = "cpu",
    *,
    precision: str = "fp32",
    max_atoms: int | None = DEFAULT_MAX_ATOMS,
    source: str = "the SMILES file",
    lines: list[int] | None = None,
) -> np.ndarray:
    """Graph embeddings ``[len(smiles), C]`` (float32) from a checkpoint's encoder, in
    eval mode, so the same input always gives the same rows (computed in :obj:`precision`,
    :data:`~pyg_molblend.training.utils.PRECISIONS`). With :obj:`skip_invalid` an
    invalid SMILES, or a molecule above :obj:`max_atoms` heavy atoms, gets a row of NaN
    (and is counted in a warning); otherwise it raises a :class:`ValueError` naming
    :obj:`source` and the line (from :obj:`lines`) or row.

    Examples:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # the one counted warning about "C1CC"
        ...     rows = embed_smiles("pretrained", ["CCO", "C1CC", "c1ccccc1"], skip_invalid=True)
        >>> rows.shape, np.isnan(rows).all(axis=1).tolist()
        ((3, 128), [False, True, False])
    """
    payload = load_checkpoint(checkpoint)
    if mode is None:
        mode = payload.get("predictor", {}).get("mode", "2d")
    encoder = load_encoder(checkpoint).to(device).eval()
    graphs, skipped = featurize_smiles(
        smiles, skip_invalid, source=source, max_atoms=max_atoms, lines=lines
    )
    conformer = AddConformer(seed=0) if mode != "2d" else None
    prepared = []
    for data in graphs:
        data = AddShortestPath()(data)
        prepared.append(conformer(data) if conformer is not None else data)
    rows = map_batches(
        lambda dense: encoder.encode(dense, mode, nodes=False).graph.float(),
        prepared,
        batch_size,
        device,
        max_hops=encoder.max_hops,
        precision=precision,
    )
    valid = np.zeros((0, encoder.channels), np.float32) if rows is None else rows.numpy()
    out = np.full((len(smiles), encoder.channels), np.nan, dtype=np.float32)
    bad = {row for row, _ in skipped}
    out[[i for i in range(len(smiles)) if i not in bad]] = valid
    if conformer is not None and conformer.num_failures:
        warnings.warn(
            f"{conformer.num_failures} molecules had no conformer and were "
            "embedded from their 2D relations",
            stacklevel=2,
        )
    return out


def add_arguments(subparsers: Any) -> None:
    em = subparsers.add_parser("embed", help="graph embeddings of SMILES as a .npy file")
    em.add_argument(
        "--checkpoint", required=True, help="pretrain or finetune checkpoint, or 'pretrained'"
    )
    em.add_argument(
        "--smiles", required=True, help="CSV/TSV with a SMILES column, or .smi/.txt"
    )
    em.add_argument(
        "--smiles-column", help="SMILES column of a CSV (default: 'smiles', any case)"
    )
    em.add_argument("--out", required=True, help="output .npy file ('.npy' is added if missing)")
    em.add_argument(
        "--mode",
        default=None,
        choices=("2d", "3d", "2d+3d"),
        help="default: the fine-tuned model's mode, else 2d",
    )
    em.add_argument("--batch-size", type=int, default=64)
    em.add_argument(
        "--skip-invalid",
        action="store_true",
        help="write a NaN row for an invalid or too-large SMILES instead of failing",
    )
    em.add_argument(
        "--max-atoms",
        type=int,
        default=DEFAULT_MAX_ATOMS,
        help=f"largest molecule accepted, in heavy atoms (default: {DEFAULT_MAX_ATOMS})",
    )
    add_device_argument(em)


def run(args: argparse.Namespace) -> np.ndarray:
    path = Path(args.out)
    if path.suffix != ".npy":  # what np.save would write; say so instead of surprising
        path = path.with_name(path.name + ".npy")
    check_writable(path.parent)
    load_checkpoint(args.checkpoint)  # a bad checkpoint fails before the SMILES are read
    records = read_smiles_lines(args.smiles, args.smiles_column)
    out = embed_smiles(
        args.checkpoint,
        [smiles for _, smiles in records],
        args.mode,
        args.batch_size,
        args.skip_invalid,
        args.device,
        precision=args.precision,
        max_atoms=args.max_atoms,
        source=args.smiles,
        lines=[line for line, _ in records],
    )
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, out)
    print(f"wrote {out.shape[0]} x {out.shape[1]} embeddings to {path}")
    return out
