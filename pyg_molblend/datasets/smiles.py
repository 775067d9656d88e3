"""Unlabelled molecules from SMILES or SDF files (the pretraining corpus and ``embed``
input)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import os.path as osp
import warnings
from collections.abc import Callable, Sequence

from torch_geometric.data import Data, InMemoryDataset

from pyg_molblend.data.featurize import from_mol, from_smiles, quiet_rdkit
from pyg_molblend.datasets.csv_dataset import read_csv_table
from pyg_molblend.datasets.utils import apply_transform

__all__ = ["SDFDataset", "SmilesDataset", "featurize_smiles", "read_smiles_file"]


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
    _warn_skipped(skipped, f"invalid SMILES of {source}")
    return graphs, skipped


def _warn_skipped(skipped: list[tuple[int, str]], what: str) -> None:
    if skipped:
        warnings.warn(
            f"Skipped {len(skipped)} {what} (first: row {skipped[0][0]}, {skipped[0][1]!r})",
            stacklevel=3,
        )


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

    #: Prefix of the processed file names.
    _kind = "smiles"

    @property
    def processed_file_names(self) -> list[str]:
        stats = [(p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in self.paths]
        options = [stats, self.skip_invalid, self.max_molecules, repr(self.pre_transform)]
        key = hashlib.sha1(json.dumps(options, default=str).encode()).hexdigest()[:12]
        return [f"{self._kind}_{key}.pt", f"{self._kind}_{key}.json"]

    def download(self) -> None:
        return None

    @property
    def smiles(self) -> list[str]:
        return list(self._data.smiles)

    def _read(self) -> tuple[list[Data], list[tuple[int, str]]]:
        """The graphs of the files and the ``(row, text)`` of the molecules skipped."""
        smiles: list[str] = []
        for path in self.paths:
            smiles += read_smiles_file(path)
        if self.max_molecules is not None:
            smiles = smiles[: self.max_molecules]
        return featurize_smiles(smiles, self.skip_invalid, source="the SMILES files")

    def process(self) -> None:
        graphs, skipped = self._read()
        if not graphs:
            raise ValueError(f"No valid molecule in {self.paths}")
        if self.pre_transform is not None:
            graphs = apply_transform(graphs, self.pre_transform, self.num_workers, "Preparing")
        self.save(graphs, self.processed_paths[0])
        with open(self.processed_paths[1], "w") as f:
            json.dump({"skipped": skipped}, f)


class SDFDataset(SmilesDataset):
    r"""Unlabelled molecules read from SDF files (optionally ``.gz``), with the 3D
    coordinates of their records: the input of pretraining on DFT geometries such as
    PCQM4Mv2's ``pcqm4m-v2-train.sdf``. Each record is featurized with
    :func:`~pyg_molblend.data.from_mol` (hydrogens removed, heavy-atom coordinates kept as
    ``pos`` with ``has_pos = True`` when the record is 3D), then ``pre_transform`` runs
    and the result is cached as in :class:`SmilesDataset`, whose arguments it takes. A
    record without 3D coordinates gets none (an
    :class:`~pyg_molblend.transforms.AddConformer` pre-transform embeds it).

    Rows in :attr:`skipped` count records over all files in order; the text is
    ``"<file>:<record>"``.

    Raises:
        ValueError: naming the file and record of the first record RDKit cannot read,
            unless :obj:`skip_invalid` (then one warning gives the count).
    """

    _kind = "sdf"

    def _read(self) -> tuple[list[Data], list[tuple[int, str]]]:
        from rdkit import Chem

        graphs: list[Data] = []
        skipped: list[tuple[int, str]] = []
        row = 0
        for path in self.paths:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rb") as f, quiet_rdkit():
                for record, mol in enumerate(Chem.ForwardSDMolSupplier(f, removeHs=False)):
                    if self.max_molecules is not None and row >= self.max_molecules:
                        break
                    try:
                        graphs.append(from_mol(mol))
                    except ValueError as error:
                        if not self.skip_invalid:
                            raise ValueError(
                                f"Record {record} of {path!r} cannot be read: {error}"
                            ) from error
                        skipped.append((row, f"{path}:{record}"))
                    row += 1
        _warn_skipped(skipped, "unreadable SDF records")
        return graphs, skipped
