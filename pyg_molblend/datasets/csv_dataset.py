"""Labelled SMILES tables (CSV files) as in-memory PyG datasets."""
from __future__ import annotations

import bz2
import csv
import gzip
import lzma
import os
import os.path as osp
from collections.abc import Callable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch
from torch_geometric.data import Data
from tqdm import tqdm

from pyg_molblend.constants import DEFAULT_MAX_ATOMS, TASK_TYPES
from pyg_molblend.datasets.utils import (
    CachedDataset,
    Rejections,
    featurize_rows,
    reject_row,
    shorten,
    warn_user,
    worker_pool,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TASK_TYPES", "CSVDataset", "SmilesTableDataset"]


Transform = Callable[[Data], Data]
Filter = Callable[[Data], bool]

_OPENERS: dict[str, Callable[..., IO[str]]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def open_input(path: str | os.PathLike, mode: str = "rt", **kwargs: Any) -> IO:
    """Opens an input file, decompressing it by its suffix (``.gz``, ``.bz2``, ``.xz``):
    the one way every reader of this package (CSV, SMILES and SDF files) opens its files."""
    path = os.fspath(path)
    return _OPENERS.get(osp.splitext(path)[1], open)(path, mode, **kwargs)


def uncompressed_name(path: str | os.PathLike) -> str:
    """:obj:`path` without a compression suffix that :func:`open_input` reads
    (``"a.csv.gz"`` gives ``"a.csv"``), to tell a file's format by its name."""
    stem, suffix = osp.splitext(os.fspath(path))
    return stem if suffix in _OPENERS else os.fspath(path)


def read_csv_table(path: str | os.PathLike, sep: str = ",") -> pd.DataFrame:
    """Reads a CSV file (optionally ``.gz``, ``.bz2`` or ``.xz`` compressed) as strings,
    indexed by the line number a text editor shows for each row.

    The header is the first non-blank line; blank lines are not rows; a quoted field may
    span lines (its row is numbered by its first line); a UTF-8 byte-order mark is
    dropped. Every field stays a string (empty for a missing value), so that SMILES such
    as ``"NA"`` are not turned into NaN. Row ``i`` of the table (0-based, header
    excluded) is data row ``i`` as pandas counts it.

    Raises:
        ValueError: naming the file and line of a row whose number of fields differs from
            the header's, of a duplicated column name, or of malformed CSV; or if the
            file has no header.
    """
    return next(iter_csv_table(path, sep, chunk_size=None))


def iter_csv_table(
    path: str | os.PathLike, sep: str = ",", chunk_size: int | None = 10_000
) -> Iterator[pd.DataFrame]:
    r""":func:`read_csv_table` in pieces of :obj:`chunk_size` rows (all rows at once for
    :obj:`None`), so that a file of millions of rows is read in bounded memory. A file
    with a header and no rows gives one empty table (with the header's columns).

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "library.csv"
        >>> _ = path.write_text("id,smiles\n\nm1,CCO\nm2,CCN\nm3,CCC\n")
        >>> [chunk.index.tolist() for chunk in iter_csv_table(path, chunk_size=2)]  # lines
        [[3, 4], [5]]
    """
    import pandas as pd

    path = os.fspath(path)
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    emitted = False

    def table() -> pd.DataFrame:
        assert header is not None
        return pd.DataFrame(rows, columns=header, index=pd.Index(lines, name="line"), dtype=object)

    with open_input(path, "rt", encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=sep)
        line = 1
        try:
            for fields in reader:
                start, line = line, reader.line_num + 1
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue
                if header is None:
                    header = fields
                    duplicated = sorted({c for c in fields if fields.count(c) > 1})
                    if duplicated:
                        raise ValueError(f"{path}, line {start}: duplicated columns {duplicated}")
                elif len(fields) != len(header):
                    raise ValueError(
                        f"{path}, line {start}: {len(fields)} fields where the header has "
                        f"{len(header)}"
                    )
                else:
                    rows.append(fields)
                    lines.append(start)
                    if chunk_size is not None and len(rows) == chunk_size:
                        yield table()
                        rows, lines, emitted = [], [], True
        except csv.Error as error:
            raise ValueError(f"{path}, line {reader.line_num}: malformed CSV ({error})") from error
    if header is None:
        raise ValueError(f"{path} is empty: it has no header line")
    if rows or not emitted:
        yield table()


def parse_targets(
    table: pd.DataFrame,
    columns: Sequence[str],
    task_type: str,
    source: str = "the table",
    num_classes: int | None = None,
) -> torch.Tensor:
    """Target columns of :obj:`table` (from :func:`read_csv_table`) as a float tensor
    ``[num_rows, len(columns)]``, NaN where a field is empty (a missing label).

    Every other value must be a finite number in ``float32`` (``inf``, ``nan`` written
    out, and ``1e40``, which overflows, are refused), a classification label 0 or 1, and
    a multiclass label a class index: an integer from 0, below :obj:`num_classes` when
    that is given.

    Raises:
        ValueError: naming :obj:`source`, the line (the table's index), the column and
            the value of a wrong entry, or naming a column without any label.
    """
    import pandas as pd

    out = torch.empty(len(table), len(columns), dtype=torch.float)
    for k, column in enumerate(columns):
        text = table[column].str.strip()
        empty = (text == "").to_numpy()
        numbers = pd.to_numeric(text.mask(text == ""), errors="coerce").to_numpy(dtype=float)
        with np.errstate(over="ignore"):
            values = numbers.astype(np.float32)
        bad = ~empty & ~np.isfinite(values)
        if bad.any():
            position = int(bad.argmax())
            number = not np.isnan(numbers[position]) or text.iloc[position].lower() == "nan"
            what = "is not a finite float32 number" if number else "is not a number"
            raise ValueError(
                f"{source}, line {table.index[position]}, column {column!r}: target "
                f"{text.iloc[position]!r} {what}; leave the field empty for a missing label"
            )
        if empty.all():
            raise ValueError(
                f"{source}: target column {column!r} has no labels (every value is missing)"
            )
        if task_type == "classification":
            wrong = ~empty & ~np.isin(values, [0.0, 1.0])
            if wrong.any():
                position = int(wrong.argmax())
                raise ValueError(
                    f"{source}, line {table.index[position]}, column {column!r}: a "
                    f"classification label must be 0 or 1 (or empty), got "
                    f"{text.iloc[position]!r}"
                )
        if task_type == "multiclass":
            limit = np.inf if num_classes is None else num_classes
            with np.errstate(invalid="ignore"):
                wrong = ~empty & ((values < 0) | (values != np.round(values)) | (values >= limit))
            if wrong.any():
                position = int(wrong.argmax())
                allowed = "0, 1, 2, ..." if num_classes is None else f"0 to {num_classes - 1}"
                raise ValueError(
                    f"{source}, line {table.index[position]}, column {column!r}: a "
                    f"multiclass label must be a class index ({allowed}) or empty, got "
                    f"{text.iloc[position]!r}"
                )
        values[empty] = np.nan
        out[:, k] = torch.from_numpy(values)
    return out


class SmilesTableDataset(CachedDataset):
    r"""Base class of the labelled SMILES datasets (:class:`CSVDataset`,
    :class:`~pyg_molblend.datasets.MoleculeNet`).

    Each row becomes a :func:`~pyg_molblend.data.from_smiles` graph (``x`` ``[N, 9]`` and
    ``edge_attr`` ``[E, 3]`` long, ``smiles``, ``featurizer``) with targets ``y``
    ``[1, num_tasks]`` (float, NaN for a missing label) and ``source_row`` ``[1]`` (long):
    its data row in the file, counted from 0 after the header with blank lines not
    counted, as pandas and ``--split-file`` count rows; it stays right when rows are
    skipped. Messages name the file and the line a text editor shows (the header is line
    1). SMILES cells are stripped of surrounding whitespace; whitespace inside a SMILES is
    an invalid SMILES.

    Rows whose every target is missing are skipped with one warning giving their count
    and listed in :attr:`unlabeled`. A SMILES that RDKit cannot parse, or a molecule of
    more than :obj:`max_atoms` heavy atoms, raises a :class:`ValueError` naming the file,
    line and SMILES, or with :obj:`skip_invalid` is skipped, counted in one warning per
    reason and listed in :attr:`skipped` or :attr:`too_large`, before any
    ``pre_transform`` runs. Lists hold ``(data row, smiles)`` pairs and are saved next to
    the processed graphs. A malformed target (see :func:`parse_targets`) always raises. A
    SMILES written on several rows with different labels gives one warning with the count
    (rows are kept as they are; identical duplicates are not reported).

    ``pre_filter`` is applied before ``pre_transform``; ``pre_transform`` runs through
    :func:`~pyg_molblend.datasets.utils.apply_transform` on :obj:`num_workers`
    processes, and its results are cached on disk, keyed by
    :func:`~pyg_molblend.datasets.utils.cache_key` (file content, options, transforms).

    Subclasses define :attr:`source`, :meth:`read_table` and :meth:`cache_options`.

    Attributes:
        task_type (str): :obj:`"classification"`, :obj:`"multiclass"` or
            :obj:`"regression"`.
        num_classes (int): classes per task of a multiclass dataset: the
            :obj:`num_classes` it was given, else the largest label in the file plus one
            (at least 2); for the other task types PyG's
            :attr:`~torch_geometric.data.Dataset.num_classes`.
        target_names (list[str]): the target columns, in the order of ``y``'s columns.
        skipped (list[tuple[int, str]]): rows dropped for an invalid SMILES.
        too_large (list[tuple[int, str]]): rows dropped for more than :obj:`max_atoms`
            atoms.
        unlabeled (list[tuple[int, str]]): rows dropped for having no label at all.

    Examples:
        >>> import tempfile, pathlib, warnings
        >>> from pyg_molblend.datasets import CSVDataset
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "assay.csv").write_text("smiles,active\nC1CC,1\nCCO,0\n")
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     dataset = CSVDataset(
        ...         str(folder / "root"), folder / "assay.csv", "smiles", ["active"],
        ...         "classification", skip_invalid=True,
        ...     )
        >>> dataset.skipped, dataset[0].source_row.tolist(), len(caught)  # row 0 is skipped
        ([(0, 'C1CC')], [1], 1)
    """

    def __init__(
        self,
        root: str,
        task_type: str,
        transform: Transform | None = None,
        pre_transform: Transform | None = None,
        pre_filter: Filter | None = None,
        force_reload: bool = False,
        *,
        skip_invalid: bool = False,
        max_atoms: int | None = DEFAULT_MAX_ATOMS,
        num_workers: int = 0,
        num_classes: int | None = None,
    ) -> None:
        if task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}")
        if max_atoms is not None and (isinstance(max_atoms, bool) or max_atoms < 1):
            raise ValueError(f"max_atoms must be a positive integer or None, got {max_atoms!r}")
        if num_classes is not None:
            if task_type != "multiclass":
                raise ValueError(
                    f"num_classes is for multiclass tasks, got num_classes={num_classes!r} "
                    f"for {task_type}"
                )
            if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
                raise ValueError(
                    f"num_classes must be an integer of at least 2, got {num_classes!r}"
                )
        self.task_type = task_type
        self.given_num_classes = num_classes
        self.skip_invalid = skip_invalid
        self.max_atoms = max_atoms
        super().__init__(root, transform, pre_transform, pre_filter, force_reload, num_workers)
        self.target_names: list[str] = self.meta["target_names"]
        self.skipped = [(int(row), str(smiles)) for row, smiles in self.meta["skipped"]]
        self.too_large = [(int(row), str(smiles)) for row, smiles in self.meta["too_large"]]
        self.unlabeled = [(int(row), str(smiles)) for row, smiles in self.meta["unlabeled"]]

    @property
    def num_classes(self) -> int:
        if self.task_type == "multiclass":
            return int(self.meta["num_classes"])
        return super().num_classes

    @property
    def display_name(self) -> str:
        """Name used in progress bars and :func:`repr`."""
        raise NotImplementedError

    @property
    def source(self) -> str:
        """The file the table is read from, as messages name it."""
        raise NotImplementedError

    def read_table(self) -> tuple[pd.DataFrame, str, list[str]]:
        """The raw table (:func:`read_csv_table`), its SMILES column and its target
        columns."""
        raise NotImplementedError

    def cache_inputs(self) -> list[str]:
        return [self.source]

    def table_options(self) -> dict[str, Any]:
        """The options of the subclass that change the processed content."""
        raise NotImplementedError

    def cache_options(self) -> dict[str, Any]:
        return {
            **self.table_options(),
            "task_type": self.task_type,
            # Only when multiclass: the caches of the other task types keep their keys.
            **({"num_classes": self.given_num_classes} if self.task_type == "multiclass" else {}),
            "skip_invalid": self.skip_invalid,
            "max_atoms": self.max_atoms,
        }

    @property
    def source_rows(self) -> list[int]:
        """The data row (0-based, header excluded) of each graph of this dataset (or
        subset) in the file, in order: ``data.source_row`` of every graph."""
        rows = self._data.source_row.view(-1)
        return [int(rows[i]) for i in self.indices()]

    def process(self) -> None:
        source = self.source
        table, smiles_column, target_columns = self.read_table()
        targets = parse_targets(
            table, target_columns, self.task_type, source, self.given_num_classes
        )
        invalid = Rejections("with an invalid SMILES (see .skipped)", self.skip_invalid, source)
        large = Rejections(
            f"above max_atoms={self.max_atoms} (see .too_large)", self.skip_invalid, source
        )
        data_list: list[Data] = []
        smiles_list = table[smiles_column].str.strip().tolist()
        lines = table.index.tolist()
        labelled = (~targets.isnan().all(1)).tolist()
        unlabeled = [(row, s) for row, s in enumerate(smiles_list) if not labelled[row]]
        rows = [row for row in range(len(smiles_list)) if labelled[row]]
        with worker_pool(self.num_workers) as pool:
            results = featurize_rows(
                [smiles_list[row] for row in rows], self.max_atoms, None, pool, self.num_workers
            )
            bar = tqdm(results, total=len(rows), desc=f"Featurizing {self.display_name}")
            rejections = (invalid, large)
            for row, (outcome, data) in zip(rows, bar, strict=True):
                where = f"{source}, line {lines[row]}"
                if not reject_row(
                    outcome, data, row, smiles_list[row], where, rejections, self.max_atoms
                ):
                    data.y = targets[row].view(1, -1)
                    data.source_row = torch.tensor([row])
                    data_list.append(data)
        if unlabeled:
            row, smiles = unlabeled[0]
            warn_user(
                f"Skipped {len(unlabeled)} rows of {source} without any label (first: line "
                f"{lines[row]}, {shorten(smiles)!r}; see .unlabeled)"
            )
        invalid.warn()
        large.warn()
        _warn_conflicts(data_list, lines, source)
        num_classes = None
        if self.task_type == "multiclass":
            # parse_targets refused columns without a label, so there is a largest one.
            largest = int(np.nanmax(targets.numpy()))
            num_classes = self.given_num_classes or max(largest + 1, 2)
        meta: dict[str, Any] = {
            "target_names": list(target_columns),
            "num_classes": num_classes,
            "skipped": invalid.items,
            "too_large": large.items,
            "unlabeled": unlabeled,
        }
        self.finish(data_list, meta, source)

    def __repr__(self) -> str:
        return f"{self.display_name}({len(self)})"


def _warn_conflicts(data_list: list[Data], lines: list[int], source: str) -> None:
    """One warning if a SMILES is written on several rows with different labels."""
    first: dict[str, Data] = {}
    conflicts: list[tuple[Data, Data]] = []
    for data in data_list:
        seen = first.setdefault(data.smiles, data)
        same_missing = torch.equal(seen.y.isnan(), data.y.isnan())
        if not (same_missing and torch.equal(seen.y.nan_to_num(), data.y.nan_to_num())):
            conflicts.append((seen, data))
    if conflicts:
        a, b = conflicts[0]
        warn_user(
            f"{len(conflicts)} rows of {source} repeat an earlier row's SMILES with different "
            f"labels (first: {shorten(a.smiles)!r} on line {lines[int(a.source_row)]} with "
            f"{_labels(a.y)} and line {lines[int(b.source_row)]} with {_labels(b.y)}); both "
            "rows are kept"
        )


def _labels(y: torch.Tensor) -> str:
    return "[" + ", ".join(f"{value:.6g}" for value in y.view(-1).tolist()) + "]"


class CSVDataset(SmilesTableDataset):
    r"""A generic labelled SMILES table, for example a proprietary assay.

    The file is read where it is (no copy) and processed into ``<root>/processed/``; the
    processed file name is a :func:`~pyg_molblend.datasets.utils.cache_key` of the file's
    path and content and of every option (columns, task type, :obj:`skip_invalid`,
    :obj:`max_atoms`, ``pre_transform``, ``pre_filter``), so an edited file, another file
    of the same name or other options are processed again, never read stale. Missing
    labels (empty fields) become NaN. See :class:`SmilesTableDataset` for how unlabeled
    rows, invalid SMILES, large molecules, ``source_row`` and ``pre_transform`` are
    handled.

    Args:
        root (str): directory for the processed files.
        csv_path (str): the CSV file (``.csv``, or compressed such as ``.csv.gz``), with a
            header row.
        smiles_column (str): name of the SMILES column.
        target_columns (Sequence[str]): names of the target columns (at least one).
        task_type (str): :obj:`"classification"` (labels 0/1), :obj:`"multiclass"` (class
            indices 0, 1, 2, ...) or :obj:`"regression"`.
        transform (callable, optional): applied to each graph on access. (default: :obj:`None`)
        pre_transform (callable, optional): applied once before saving, for example
            :class:`~pyg_molblend.transforms.AddConformer`. (default: :obj:`None`)
        pre_filter (callable, optional): keeps the graphs for which it returns
            :obj:`True`. (default: :obj:`None`)
        force_reload (bool, optional): process again even if a cache exists.
            (default: :obj:`False`)
        skip_invalid (bool, optional, keyword-only): skip (and count) rows with an invalid
            SMILES or too many atoms instead of raising. (default: :obj:`False`)
        max_atoms (int, optional, keyword-only): largest molecule accepted, in heavy
            atoms; :obj:`None` for no limit.
            (default: :data:`~pyg_molblend.constants.DEFAULT_MAX_ATOMS`)
        num_workers (int, optional, keyword-only): processes that run
            :obj:`pre_transform`. (default: :obj:`0`)
        num_classes (int, optional, keyword-only): classes per task of a multiclass table
            (labels must be below it); :obj:`None` counts them from the largest label.
            (default: :obj:`None`)

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file, line and column if a column is missing (listing the
            available ones), a target column has no label or a malformed value, the task
            type is unknown, or a SMILES is invalid or too large and :obj:`skip_invalid`
            is :obj:`False`.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "assay.csv").write_text("smiles,active\nCCO,1\nc1ccccc1,0\n")
        >>> dataset = CSVDataset(
        ...     str(folder / "root"), folder / "assay.csv", "smiles", ["active"], "classification"
        ... )
        >>> len(dataset), dataset.num_tasks, dataset[0].y.tolist()
        (2, 1, [[1.0]])

        Multiclass labels are class indices:

        >>> _ = (folder / "phase.csv").write_text("smiles,phase\nCCO,2\nc1ccccc1,0\nC,1\n")
        >>> dataset = CSVDataset(
        ...     str(folder / "root"), folder / "phase.csv", "smiles", ["phase"], "multiclass"
        ... )
        >>> dataset.num_classes, dataset[0].y.tolist()
        (3, [[2.0]])
    """

    def __init__(
        self,
        root: str,
        csv_path: str | os.PathLike,
        smiles_column: str,
        target_columns: Sequence[str],
        task_type: str,
        transform: Transform | None = None,
        pre_transform: Transform | None = None,
        pre_filter: Filter | None = None,
        force_reload: bool = False,
        *,
        skip_invalid: bool = False,
        max_atoms: int | None = DEFAULT_MAX_ATOMS,
        num_workers: int = 0,
        num_classes: int | None = None,
    ) -> None:
        if isinstance(target_columns, str):
            target_columns = [target_columns]
        if len(target_columns) == 0:
            raise ValueError("target_columns must name at least one column, got none")
        self.csv_path = os.fspath(csv_path)
        if not osp.isfile(self.csv_path):
            raise FileNotFoundError(f"CSV file not found: {self.csv_path!r}")
        self.smiles_column = smiles_column
        self.target_columns = list(target_columns)
        super().__init__(
            root,
            task_type,
            transform,
            pre_transform,
            pre_filter,
            force_reload,
            skip_invalid=skip_invalid,
            max_atoms=max_atoms,
            num_workers=num_workers,
            num_classes=num_classes,
        )

    @property
    def raw_file_names(self) -> list[str]:
        return []

    @property
    def source(self) -> str:
        return self.csv_path

    def table_options(self) -> dict[str, Any]:
        return {"smiles_column": self.smiles_column, "target_columns": self.target_columns}

    def read_table(self) -> tuple[pd.DataFrame, str, list[str]]:
        table = read_csv_table(self.csv_path)
        available = list(table.columns)
        for column in [self.smiles_column, *self.target_columns]:
            if column not in available:
                raise ValueError(
                    f"Column {column!r} not found in {self.csv_path}; available columns: "
                    f"{available}"
                )
        return table, self.smiles_column, self.target_columns

    @property
    def display_name(self) -> str:
        return osp.basename(self.csv_path)
