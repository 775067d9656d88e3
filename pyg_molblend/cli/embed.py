"""``embed``: one graph embedding per input SMILES, in input order."""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.transforms import Compose
from tqdm.auto import tqdm

from pyg_molblend.cli.common import add_device_argument, add_smiles_file_arguments, positive_int
from pyg_molblend.constants import DEFAULT_MAX_ATOMS
from pyg_molblend.datasets import featurize_smiles
from pyg_molblend.datasets.smiles import iter_smiles_table
from pyg_molblend.datasets.utils import Rejections, check_num_workers, worker_pool
from pyg_molblend.training.checkpoint import load_checkpoint, load_encoder
from pyg_molblend.training.finetune import map_batches
from pyg_molblend.training.io import atomic_path, check_writable
from pyg_molblend.transforms import AddConformer, AddShortestPath

__all__ = ["add_arguments", "embed_file", "embed_smiles", "run"]


class _Embedder:
    """A checkpoint's encoder in eval mode and how it embeds: the one code path of
    :func:`embed_smiles` and :func:`embed_file`."""

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        mode: str | None,
        batch_size: int,
        device: str,
        precision: str,
    ) -> None:
        payload = load_checkpoint(checkpoint)
        self.mode = mode or payload.get("predictor", {}).get("mode", "2d")
        self.encoder = load_encoder(checkpoint).to(device).eval()
        # What featurizing a molecule adds, wherever it runs (this process or workers).
        self.transform: Any = AddShortestPath()
        if self.mode != "2d":
            self.transform = Compose([AddShortestPath(), AddConformer(seed=0)])
        self.fallbacks = 0  # molecules embedded without a conformer in a 3D mode
        self.batch_size, self.device, self.precision = batch_size, device, precision

    @torch.no_grad()
    def rows(self, graphs: list[Data], skipped: list[tuple[int, str]], size: int) -> np.ndarray:
        """``[size, C]`` float32: the embeddings of :obj:`graphs` (featurized with
        :attr:`transform`), in order, with a NaN row at each of the :obj:`skipped` rows."""
        if self.mode != "2d":
            self.fallbacks += sum(not bool(data.has_pos.all()) for data in graphs)
        rows = map_batches(
            lambda dense: self.encoder.encode(dense, self.mode, nodes=False).graph.float(),
            graphs,
            self.batch_size,
            self.device,
            max_hops=self.encoder.max_hops,
            precision=self.precision,
        )
        channels = self.encoder.channels
        valid = np.zeros((0, channels), np.float32) if rows is None else rows.numpy()
        out = np.full((size, channels), np.nan, dtype=np.float32)
        bad = {row for row, _ in skipped}
        out[[i for i in range(size) if i not in bad]] = valid
        return out

    def warn_fallbacks(self) -> None:
        if self.fallbacks:
            warnings.warn(
                f"{self.fallbacks} molecules had no conformer and were "
                "embedded from their 2D relations",
                stacklevel=3,
            )


def embed_smiles(
    checkpoint: str | os.PathLike,
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
    num_workers: int = 0,
) -> np.ndarray:
    """Graph embeddings ``[len(smiles), C]`` (float32) from a checkpoint's encoder, in
    eval mode, so the same input always gives the same rows (computed in :obj:`precision`,
    :data:`~pyg_molblend.training.utils.PRECISIONS`). With :obj:`skip_invalid` an
    invalid SMILES, or a molecule above :obj:`max_atoms` heavy atoms, gets a row of NaN
    (and is counted in a warning); otherwise it raises a :class:`ValueError` naming
    :obj:`source` and the line (from :obj:`lines`) or row. :obj:`num_workers` processes
    featurize the molecules (RDKit, shortest paths, conformers in 3D modes; the same
    rows). A file of any length: :func:`embed_file`.

    Examples:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # the one counted warning about "C1CC"
        ...     rows = embed_smiles("pretrained", ["CCO", "C1CC", "c1ccccc1"], skip_invalid=True)
        >>> rows.shape, np.isnan(rows).all(axis=1).tolist()
        ((3, 128), [False, True, False])
    """
    check_num_workers(num_workers)
    embedder = _Embedder(checkpoint, mode, batch_size, device, precision)
    with worker_pool(num_workers) as pool:
        graphs, skipped = featurize_smiles(
            smiles,
            skip_invalid,
            source=source,
            max_atoms=max_atoms,
            lines=lines,
            transform=embedder.transform,
            pool=pool,
            num_workers=num_workers,
        )
    out = embedder.rows(graphs, skipped, len(smiles))
    embedder.warn_fallbacks()
    return out


def embed_file(
    path: str | os.PathLike,
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    smiles_column: str | None = None,
    chunk_size: int = 10_000,
    mode: str | None = None,
    batch_size: int = 64,
    skip_invalid: bool = False,
    device: str = "cpu",
    precision: str = "fp32",
    max_atoms: int | None = DEFAULT_MAX_ATOMS,
    progress: bool = True,
    num_workers: int = 0,
) -> tuple[tuple[int, int], int]:
    """:func:`embed_smiles` over a SMILES file
    (:func:`~pyg_molblend.datasets.smiles.iter_smiles_table`), :obj:`chunk_size` rows at
    a time, into the ``.npy`` file :obj:`out` (``[rows, C]`` float32, one row per data
    row, in order; NaN for a skipped molecule), written in place through a memory map, so
    memory stays bounded whatever the file's length; the file appears only when complete.
    Skipped molecules are counted in one warning per reason. :obj:`num_workers`
    processes featurize the molecules, as in :func:`embed_smiles`.

    Returns:
        The shape of the array written (``(rows, C)``) and the number of rows embedded.
    """
    check_num_workers(num_workers)
    embedder = _Embedder(checkpoint, mode, batch_size, device, precision)
    source = os.fspath(path)
    # a first pass counts the rows for the .npy header: reading is cheap next to embedding
    total = sum(len(chunk) for chunk, _ in iter_smiles_table(path, smiles_column, chunk_size))
    rejections = (
        Rejections("with an invalid SMILES", skip_invalid, source),
        Rejections(f"above max_atoms={max_atoms}", skip_invalid, source),
    )
    done = 0
    bar = tqdm(total=total, desc="embed", unit="mol", disable=not progress)
    try:
        with atomic_path(out) as tmp, worker_pool(num_workers) as pool:
            table = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.float32, shape=(total, embedder.encoder.channels)
            )
            for chunk, column in iter_smiles_table(path, smiles_column, chunk_size):
                smiles = [str(s).strip() for s in chunk[column]]
                graphs, skipped = featurize_smiles(
                    smiles,
                    skip_invalid,
                    source=source,
                    max_atoms=max_atoms,
                    lines=[int(line) for line in chunk.index],
                    rejections=rejections,
                    transform=embedder.transform,
                    pool=pool,
                    num_workers=num_workers,
                )
                table[done : done + len(smiles)] = embedder.rows(graphs, skipped, len(smiles))
                done += len(smiles)
                bar.update(len(smiles))
            table.flush()
            del table  # the map is closed before the file is renamed
    finally:
        bar.close()
    for rejected in rejections:
        rejected.warn()
    embedder.warn_fallbacks()
    shape = (total, embedder.encoder.channels)
    return shape, total - sum(len(rejected.items) for rejected in rejections)


def add_arguments(subparsers: Any) -> None:
    em = subparsers.add_parser("embed", help="graph embeddings of SMILES as a .npy file")
    em.add_argument(
        "--checkpoint", required=True, help="pretrain or finetune checkpoint, or 'pretrained'"
    )
    add_smiles_file_arguments(em, "embedded", "one row of the .npy file per data row")
    em.add_argument("--out", required=True, help="output .npy file ('.npy' is added if missing)")
    em.add_argument(
        "--mode",
        default=None,
        choices=("2d", "3d", "2d+3d"),
        help="default: the fine-tuned model's mode, else 2d",
    )
    em.add_argument("--batch-size", type=positive_int, default=64)
    em.add_argument(
        "--skip-invalid",
        action="store_true",
        help="write a NaN row for an invalid or too-large SMILES instead of failing",
    )
    add_device_argument(em)


def run(args: argparse.Namespace) -> tuple[tuple[int, int], int]:
    path = Path(args.out)
    if path.suffix != ".npy":  # what np.save would write; say so instead of surprising
        path = path.with_name(path.name + ".npy")
    check_writable(path.parent)
    load_checkpoint(args.checkpoint)  # a bad checkpoint fails before the SMILES are read
    (rows, channels), embedded = embed_file(
        args.smiles,
        args.checkpoint,
        path,
        smiles_column=args.smiles_column,
        chunk_size=args.chunk_size,
        mode=args.mode,
        batch_size=args.batch_size,
        skip_invalid=args.skip_invalid,
        device=args.device,
        precision=args.precision,
        max_atoms=args.max_atoms,
        num_workers=args.num_workers,
    )
    skipped = f" ({rows - embedded} skipped: NaN rows)" if rows > embedded else ""
    print(f"wrote {rows} x {channels} embeddings to {path}{skipped}")
    return (rows, channels), embedded
