"""``embed``: one graph embedding per input SMILES, in input order."""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from pyg_molblend.datasets import featurize_smiles, read_smiles_file
from pyg_molblend.training.checkpoint import load_checkpoint, load_encoder
from pyg_molblend.transforms import AddConformer, AddShortestPath

__all__ = ["embed_smiles", "run_embed"]


@torch.no_grad()
def embed_smiles(
    checkpoint: str,
    smiles: list[str],
    mode: str | None = None,
    batch_size: int = 64,
    skip_invalid: bool = False,
    device: str = "cpu",
) -> np.ndarray:
    """Graph embeddings ``[len(smiles), C]`` (float32) from a checkpoint's encoder, in
    eval mode, so the same input always gives the same rows. With :obj:`skip_invalid` an
    invalid SMILES gets a row of NaN (and is counted in a warning); otherwise it raises
    a :class:`ValueError` naming the row."""
    payload = load_checkpoint(checkpoint)
    if mode is None:
        mode = payload.get("predictor", {}).get("mode", "2d")
    encoder = load_encoder(checkpoint).to(device).eval()
    graphs, skipped = featurize_smiles(smiles, skip_invalid, source="the SMILES file")
    conformer = AddConformer(seed=0) if mode != "2d" else None
    prepared = []
    for data in graphs:
        data = AddShortestPath()(data)
        prepared.append(conformer(data) if conformer is not None else data)
    rows = []
    for batch in DataLoader(prepared, batch_size=batch_size, shuffle=False):
        rows.append(encoder.encode(batch.to(device), mode).graph.float().cpu())
    valid = torch.cat(rows).numpy() if rows else np.zeros((0, encoder.channels), np.float32)
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


def run_embed(args: argparse.Namespace) -> np.ndarray:
    smiles = read_smiles_file(args.smiles)
    out = embed_smiles(
        args.checkpoint, smiles, args.mode, args.batch_size, args.skip_invalid, args.device
    )
    np.save(args.out, out)
    print(f"wrote {out.shape[0]} x {out.shape[1]} embeddings to {args.out}")
    return out
