"""Unlabelled molecules from SMILES files (the pretraining corpus and ``embed`` input)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import os.path as osp
import warnings
from collections.abc import Callable, Sequence

from torch_geometric.data import Data, InMemoryDataset

from pyg_molblend.data.featurize import from_smiles
from pyg_molblend.datasets.csv_dataset import read_csv_table
from pyg_molblend.datasets.utils import apply_transform

__all__ = ["SmilesDataset", "featurize_smiles", "read_smiles_file"]


def read_smiles_file(path: str | os.PathLike) -> list[str]:
    """SMILES strings of a file, in order.

    A ``.csv``/``.tsv`` file (optionally ``.gz``) needs a ``smiles`` column (any case);
    any other file (``.smi``, ``.txt``) holds one SMILES per line, as its first
    whitespace-separated field; blank lines are skipped and a first line reading
    ``smiles`` is taken as a header.

    Raises:
        ValueError: if the file does not exist or a CSV has no ``smiles`` column.
    """
    path = str(path)
    if not osp.isfile(path):
        raise ValueError(f"SMILES file not found: {path!r}")
    stem = path[:-3] if path.endswith(".gz") else path
    if stem.endswith((".csv", ".tsv")):
        table = read_csv_table(path, sep="," if stem.endswith(".csv") else "\t")
        columns = {c.strip().lower(): c for c in table.columns}
        if "smiles" not in columns:
            raise ValueError(f"{path!r} has no 'smiles' column; columns are {list(table.columns)}")
        return [s.strip() for s in table[columns["smiles"]].tolist()]
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        lines = [line.split() for line in f]
    smiles = [fields[0] for fields in lines if fields]
    if smiles and smiles[0].lower() == "smiles":
        smiles = smiles[1:]
    return smiles


def featurize_smiles(
    smiles: Sequence[str], skip_invalid: bool = False, source: str = "input"
) -> tuple[list[Data], list[tuple[int, str]]]:
    """Graphs of :obj:`smiles` and the ``(row, smiles)`` pairs that failed.

    Raises:
        ValueError: naming the row and the string of the first invalid SMILES, unless
            :obj:`skip_invalid` (then one warning gives the count).
    """
    graphs, skipped = [], []
    for row, text in enumerate(smiles):
        try:
            graphs.append(from_smiles(text))
        except ValueError as error:
            if not skip_invalid:
                raise ValueError(f"Row {row} of {source}: {error}") from error
            skipped.append((row, text))
    if skipped:
        warnings.warn(
            f"Skipped {len(skipped)} invalid SMILES of {source} (first: row {skipped[0][0]}, "
            f"{skipped[0][1]!r})",
            stacklevel=2,
        )
    return graphs, skipped


class SmilesDataset(InMemoryDataset):
    r"""Unlabelled molecules read from SMILES files, featurized with
    :func:`~pyg_molblend.data.from_smiles` and cached on disk with their
    ``pre_transform`` (pair relations, conformers), which runs on :obj:`num_workers`
    processes with a progress bar. The cache is keyed on the files' paths, sizes and
    modification times and on the options, so editing a file reprocesses it.

    Args:
        root (str): cache directory.
        paths (Sequence[str]): SMILES files (see :func:`read_smiles_file`).
        pre_transform (callable, optional): applied once, cached.
        transform (callable, optional): applied on access.
        skip_invalid (bool, optional): skip unparsable SMILES (counted, listed in
            :attr:`skipped`) instead of raising. (default: :obj:`False`)
        max_molecules (int, optional): keep only the first molecules (all files in order).
        num_workers (int, optional): processes for ``pre_transform``. (default: :obj:`0`)
    """

    def __init__(
        self,
        root: str,
        paths: Sequence[str],
        pre_transform: Callable[[Data], Data] | None = None,
        transform: Callable[[Data], Data] | None = None,
        skip_invalid: bool = False,
        max_molecules: int | None = None,
        num_workers: int = 0,
        force_reload: bool = False,
    ) -> None:
        if not paths:
            raise ValueError("SmilesDataset needs at least one SMILES file")
        self.paths = [osp.abspath(str(p)) for p in paths]
        for path in self.paths:
            if not osp.isfile(path):
                raise ValueError(f"SMILES file not found: {path!r}")
        self.skip_invalid = skip_invalid
        self.max_molecules = max_molecules
        self.num_workers = num_workers
        super().__init__(root, transform, pre_transform, force_reload=force_reload)
        self.load(self.processed_paths[0])
        with open(self.processed_paths[1]) as f:
            self.skipped = [(int(r), str(s)) for r, s in json.load(f)["skipped"]]

    @property
    def raw_file_names(self) -> list[str]:
        return []

    @property
    def processed_file_names(self) -> list[str]:
        stats = [(p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in self.paths]
        options = [stats, self.skip_invalid, self.max_molecules, repr(self.pre_transform)]
        key = hashlib.sha1(json.dumps(options, default=str).encode()).hexdigest()[:12]
        return [f"smiles_{key}.pt", f"smiles_{key}.json"]

    def download(self) -> None:
        return None

    @property
    def smiles(self) -> list[str]:
        return list(self._data.smiles)

    def process(self) -> None:
        smiles: list[str] = []
        for path in self.paths:
            smiles += read_smiles_file(path)
        if self.max_molecules is not None:
            smiles = smiles[: self.max_molecules]
        graphs, skipped = featurize_smiles(smiles, self.skip_invalid, source="the SMILES files")
        if not graphs:
            raise ValueError(f"No valid molecule in {self.paths}")
        if self.pre_transform is not None:
            graphs = apply_transform(graphs, self.pre_transform, self.num_workers, "Preparing")
        self.save(graphs, self.processed_paths[0])
        with open(self.processed_paths[1], "w") as f:
            json.dump({"skipped": skipped}, f)
