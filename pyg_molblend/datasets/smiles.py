"""Unlabelled molecules from SMILES or SDF files (the pretraining corpus, and the input of
``embed`` and ``predict``)."""

from __future__ import annotations

import os
import os.path as osp
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from torch_geometric.data import Data

from pyg_molblend.constants import DEFAULT_MAX_ATOMS
from pyg_molblend.data.featurize import from_mol, quiet_rdkit
from pyg_molblend.datasets.csv_dataset import iter_csv_table, open_input, uncompressed_name
from pyg_molblend.datasets.utils import (
    CachedDataset,
    Rejections,
    featurize_rows,
    input_files,
    reject_row,
    shorten,
)

__all__ = [
    "SDFDataset",
    "SmilesDataset",
    "featurize_smiles",
    "iter_smiles_table",
    "read_smiles_file",
]

if TYPE_CHECKING:
    import pandas as pd

Transform = Callable[[Data], Data]
Filter = Callable[[Data], bool]


def iter_smiles_table(
    path: str | os.PathLike, smiles_column: str | None = None, chunk_size: int = 10_000
) -> Iterator[tuple[pd.DataFrame, str]]:
    r"""The rows of a SMILES file in chunks of :obj:`chunk_size`, as string tables indexed
    by the line a text editor shows, each with the name of its SMILES column.

    A ``.csv``/``.tsv`` file keeps all its columns; the SMILES column is
    :obj:`smiles_column`, or by default the one named ``smiles`` in any case. Any other
    file (``.smi``, ``.txt``) holds a SMILES per line and, after whitespace, an optional
    name (column ``name``); blank lines are skipped and a first line reading ``smiles`` is
    a header. Any of them may be ``.gz``, ``.bz2`` or ``.xz`` compressed. This is the one
    reader of SMILES files: ``predict``, ``embed`` and both pretraining corpora use it.

    Raises:
        ValueError: naming the file if it does not exist, is empty, holds a header and
            no molecules, or lacks the SMILES column.

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "library.smi"
        >>> _ = path.write_text("CCO ethanol\nc1ccccc1 benzene\n\nCN\n")
        >>> for chunk, column in iter_smiles_table(path, chunk_size=2):
        ...     print(chunk.index.tolist(), chunk[column].tolist(), chunk["name"].tolist())
        [1, 2] ['CCO', 'c1ccccc1'] ['ethanol', 'benzene']
        [4] ['CN'] ['']
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise ValueError(f"SMILES file not found: {path!r}")
    if osp.getsize(path) == 0:
        raise ValueError(f"SMILES file {path!r} is empty")
    stem = uncompressed_name(path)
    if stem.endswith((".csv", ".tsv")):
        chunks = iter_csv_table(path, "," if stem.endswith(".csv") else "\t", chunk_size)
        column = None
        rows = 0
        for chunk in chunks:
            if column is None:
                column = _smiles_column(path, list(chunk.columns), smiles_column)
            rows += len(chunk)
            if len(chunk):
                yield chunk, column
        if rows == 0:
            raise ValueError(f"SMILES file {path!r} has a header but no molecules")
        return
    yield from _iter_smi(path, chunk_size)


def _smiles_column(path: str, columns: list[str], wanted: str | None) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"{path!r} has no column {wanted!r}; columns are {columns}")
        return wanted
    matches = [c for c in columns if c.strip().lower() == "smiles"]
    if not matches:
        raise ValueError(
            f"{path!r} has no 'smiles' column (any case); columns are {columns} (predict and "
            "embed take another column's name with --smiles-column)"
        )
    return matches[0]


def _iter_smi(path: str, chunk_size: int) -> Iterator[tuple[pd.DataFrame, str]]:
    import pandas as pd

    def table(rows: list[tuple[str, str]], lines: list[int]) -> pd.DataFrame:
        return pd.DataFrame(
            rows, columns=["smiles", "name"], index=pd.Index(lines, name="line"), dtype=object
        )

    rows: list[tuple[str, str]] = []
    lines: list[int] = []
    total = 0
    first = True
    with open_input(path, "rt") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split(maxsplit=1)
            if not fields:
                continue
            if first and fields[0].lower() == "smiles":
                first = False
                continue
            first = False
            rows.append((fields[0], fields[1].strip() if len(fields) > 1 else ""))
            lines.append(number)
            if len(rows) == chunk_size:
                total += len(rows)
                yield table(rows, lines), "smiles"
                rows, lines = [], []
    if rows:
        total += len(rows)
        yield table(rows, lines), "smiles"
    if total == 0:
        raise ValueError(f"SMILES file {path!r} holds no molecules")


def read_smiles_lines(
    path: str | os.PathLike, smiles_column: str | None = None, limit: int | None = None
) -> list[tuple[int, str]]:
    """``(line, smiles)`` of the molecules of a file (its first :obj:`limit` only, the
    rest not read, when given), in order, with the line number a text editor shows and
    surrounding whitespace stripped: :func:`iter_smiles_table` read whole; see
    :func:`read_smiles_file` for the formats.

    Raises:
        ValueError: as :func:`iter_smiles_table`.
    """
    items: list[tuple[int, str]] = []
    for chunk, column in iter_smiles_table(path, smiles_column):
        items += [
            (int(line), str(smiles).strip())
            for line, smiles in zip(chunk.index, chunk[column], strict=True)
        ]
        if limit is not None and len(items) >= limit:
            return items[:limit]
    return items


def read_smiles_file(path: str | os.PathLike) -> list[str]:
    r"""SMILES strings of a file, in order.

    A ``.csv``/``.tsv`` file needs a ``smiles`` column (any case); any other file
    (``.smi``, ``.txt``) holds one SMILES per line, as its first whitespace-separated
    field; blank lines are skipped and a first line reading ``smiles`` is taken as a
    header. Any of them may be ``.gz``, ``.bz2`` or ``.xz`` compressed.

    Raises:
        ValueError: naming the file if it does not exist, is empty, holds no molecules or
            a CSV has no ``smiles`` column.

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "library.csv"
        >>> _ = path.write_text("id,SMILES\nm1,CCO\nm2,c1ccccc1\n")
        >>> read_smiles_file(path)
        ['CCO', 'c1ccccc1']
    """
    return [smiles for _, smiles in read_smiles_lines(path)]


def featurize_smiles(
    smiles: Sequence[str],
    skip_invalid: bool = False,
    source: str = "input",
    *,
    max_atoms: int | None = None,
    lines: Sequence[int] | None = None,
    rejections: tuple[Rejections, Rejections] | None = None,
    transform: Transform | None = None,
    pool: Any = None,
    num_workers: int = 0,
) -> tuple[list[Data], list[tuple[int, str]]]:
    """Graphs of :obj:`smiles` (:func:`~pyg_molblend.data.from_smiles`) and the
    ``(row, smiles)`` pairs (0-based rows) that have no graph: invalid, or above
    :obj:`max_atoms` heavy atoms.

    Args:
        smiles (Sequence[str]): the SMILES strings.
        skip_invalid (bool, optional): skip and count instead of raising.
            (default: :obj:`False`)
        source (str, optional): the input, named in messages. (default: :obj:`"input"`)
        max_atoms (int, optional, keyword-only): largest molecule accepted; :obj:`None`
            for no limit. (default: :obj:`None`)
        lines (Sequence[int], optional, keyword-only): the line of each SMILES in
            :obj:`source`, for messages; by default messages give the 0-based row.
        rejections (tuple, optional, keyword-only): the invalid and the too large
            :class:`~pyg_molblend.datasets.utils.Rejections` to record into, for a caller
            that reads a file in chunks and warns once at its end (their :obj:`skip` then
            decides, and nothing is warned here); by default this call's own, warned at
            its end.
        transform (callable, optional, keyword-only): applied to each graph where it is
            made (its warnings silenced: the caller counts what it needs).
        pool (multiprocessing.Pool, optional, keyword-only): a
            :func:`~pyg_molblend.datasets.utils.worker_pool` of :obj:`num_workers`
            processes to featurize in (the same graphs); by default this process.

    Raises:
        ValueError: naming the source, line (or row) and string of the first invalid or
            too large molecule, unless :obj:`skip_invalid` (then one warning per reason
            gives the count).

    Examples:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:  # one counted warning
        ...     graphs, skipped = featurize_smiles(["CCO", "C1CC"], skip_invalid=True)
        >>> len(graphs), skipped[0][0], len(caught)
        (1, 1, 1)
    """
    if rejections is None:
        invalid = Rejections("with an invalid SMILES", skip_invalid, source)
        large = Rejections(f"above max_atoms={max_atoms}", skip_invalid, source)
    else:
        invalid, large = rejections
    before = len(invalid.items), len(large.items)
    graphs = []
    results = featurize_rows(smiles, max_atoms, transform, pool, num_workers)
    for row, (outcome, data) in enumerate(results):
        where = f"{source}, line {lines[row]}" if lines is not None else f"{source}, row {row}"
        if not reject_row(outcome, data, row, smiles[row], where, (invalid, large), max_atoms):
            graphs.append(data)
    if rejections is None:
        invalid.warn()
        large.warn()
    return graphs, sorted(invalid.items[before[0] :] + large.items[before[1] :])


class SmilesDataset(CachedDataset):
    r"""Unlabelled molecules read from SMILES files, featurized with
    :func:`~pyg_molblend.data.from_smiles` and cached on disk with their
    ``pre_transform`` (pair relations, conformers), which runs on :obj:`num_workers`
    processes with a progress bar. The cache is keyed by
    :func:`~pyg_molblend.datasets.utils.cache_key` on the files' paths and contents and on
    every option, so editing a file reprocesses it.

    Arguments follow :class:`~torch_geometric.data.InMemoryDataset`'s order; the options
    of this package are keyword-only. Molecules that cannot be parsed, or have more than
    :obj:`max_atoms` heavy atoms, raise a :class:`ValueError` naming the file, line and
    SMILES, or with :obj:`skip_invalid` are skipped before ``pre_transform`` runs, counted
    in one warning per reason and listed in :attr:`skipped` (``(row, smiles)``, rows
    counted over all files in order).

    Args:
        root (str): cache directory.
        paths (Sequence[str]): SMILES files (see :func:`read_smiles_file`).
        transform (callable, optional): applied on access.
        pre_transform (callable, optional): applied once, cached.
        pre_filter (callable, optional): keeps the graphs for which it returns
            :obj:`True`, before ``pre_transform``.
        force_reload (bool, optional): process again even if a cache exists.
            (default: :obj:`False`)
        skip_invalid (bool, optional, keyword-only): skip (and count) unparsable or too
            large molecules instead of raising. (default: :obj:`False`)
        max_molecules (int, optional, keyword-only): keep only the first molecules (all
            files in order).
        max_atoms (int, optional, keyword-only): largest molecule accepted, in heavy
            atoms; :obj:`None` for no limit.
            (default: :data:`~pyg_molblend.constants.DEFAULT_MAX_ATOMS`)
        num_workers (int, optional, keyword-only): processes for ``pre_transform``.
            (default: :obj:`0`)

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "corpus.smi").write_text("CCO\nc1ccccc1\n")
        >>> dataset = SmilesDataset(str(folder / "root"), [folder / "corpus.smi"])
        >>> dataset.smiles, dataset.num_tasks
        (['CCO', 'c1ccccc1'], 0)
    """

    prefix = "smiles"

    def __init__(
        self,
        root: str,
        paths: Sequence[str | os.PathLike],
        transform: Transform | None = None,
        pre_transform: Transform | None = None,
        pre_filter: Filter | None = None,
        force_reload: bool = False,
        *,
        skip_invalid: bool = False,
        max_molecules: int | None = None,
        max_atoms: int | None = DEFAULT_MAX_ATOMS,
        num_workers: int = 0,
    ) -> None:
        if not isinstance(paths, (str, os.PathLike)) and not paths:
            raise ValueError(f"{type(self).__name__} needs at least one file")
        self.paths = input_files(paths)
        self.skip_invalid = skip_invalid
        self.max_molecules = max_molecules
        self.max_atoms = max_atoms
        super().__init__(root, transform, pre_transform, pre_filter, force_reload, num_workers)
        self.skipped = [(int(r), str(s)) for r, s in self.meta["skipped"]]

    @property
    def raw_file_names(self) -> list[str]:
        return []

    def cache_inputs(self) -> list[str]:
        return self.paths

    def cache_options(self) -> dict[str, Any]:
        return {
            "skip_invalid": self.skip_invalid,
            "max_molecules": self.max_molecules,
            "max_atoms": self.max_atoms,
        }

    def _read(self) -> tuple[list[Data], list[tuple[int, str]]]:
        """The graphs of the files and the ``(row, text)`` of the molecules skipped."""
        graphs: list[Data] = []
        skipped: list[tuple[int, str]] = []
        remaining, offset = self.max_molecules, 0
        for path in self.paths:
            if remaining == 0:
                break
            items = read_smiles_lines(path, limit=remaining)
            if remaining is not None:
                remaining -= len(items)
            found, dropped = featurize_smiles(
                [smiles for _, smiles in items],
                self.skip_invalid,
                source=path,
                max_atoms=self.max_atoms,
                lines=[line for line, _ in items],
            )
            graphs += found
            skipped += [(offset + row, text) for row, text in dropped]
            offset += len(items)
        return graphs, skipped

    def process(self) -> None:
        graphs, skipped = self._read()
        self.finish(graphs, {"skipped": skipped}, source=", ".join(self.paths))


class SDFDataset(SmilesDataset):
    r"""Unlabelled molecules read from SDF files (optionally ``.gz``), with the 3D
    coordinates of their records: the input of pretraining on DFT geometries such as
    PCQM4Mv2's ``pcqm4m-v2-train.sdf``. Each record is featurized with
    :func:`~pyg_molblend.data.from_mol` (hydrogens removed, heavy-atom coordinates kept as
    ``pos`` with ``has_pos = True`` when the record is 3D), then ``pre_transform`` runs
    and the result is cached as in :class:`SmilesDataset`, whose arguments it takes
    (:obj:`max_atoms` included). A record without 3D coordinates gets none (an
    :class:`~pyg_molblend.transforms.AddConformer` pre-transform embeds it).

    Rows in :attr:`skipped` count records over all files in order; the text is
    ``"<file>:<record>"`` (records counted from 0).

    Raises:
        ValueError: naming the file and record of the first record RDKit cannot read or
            that has more than :obj:`max_atoms` heavy atoms, unless :obj:`skip_invalid`
            (then one warning per reason gives the count).

    Examples:
        >>> import tempfile, pathlib
        >>> from rdkit import Chem
        >>> from rdkit.Chem import AllChem
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
        >>> AllChem.EmbedMolecule(mol, randomSeed=0)
        0
        >>> with Chem.SDWriter(str(folder / "corpus.sdf")) as writer:
        ...     writer.write(mol)
        >>> dataset = SDFDataset(str(folder / "root"), [folder / "corpus.sdf"])
        >>> dataset[0].pos.shape, bool(dataset[0].has_pos)  # heavy atoms, record coordinates
        (torch.Size([3, 3]), True)
    """

    prefix = "sdf"

    def _read(self) -> tuple[list[Data], list[tuple[int, str]]]:
        from rdkit import Chem

        graphs: list[Data] = []
        source = ", ".join(self.paths)
        invalid = Rejections("that RDKit cannot read", self.skip_invalid, source)
        large = Rejections(f"above max_atoms={self.max_atoms}", self.skip_invalid, source)
        row = 0
        for path in self.paths:
            with open_input(path, "rb") as f, quiet_rdkit():
                for record, mol in enumerate(Chem.ForwardSDMolSupplier(f, removeHs=False)):
                    if self.max_molecules is not None and row >= self.max_molecules:
                        break
                    where = f"{path}, record {record}"
                    try:
                        data = from_mol(mol)
                    except ValueError as error:
                        invalid.add(row, f"{path}:{record}", f"{where} cannot be read: {error}")
                    else:
                        if self.max_atoms is not None and data.num_nodes > self.max_atoms:
                            large.add(
                                row,
                                f"{path}:{record}",
                                f"{where}: molecule {shorten(data.smiles)!r} has "
                                f"{data.num_nodes} atoms, above max_atoms={self.max_atoms}",
                            )
                        else:
                            graphs.append(data)
                    row += 1
        invalid.warn()
        large.warn()
        return graphs, sorted(invalid.items + large.items)
