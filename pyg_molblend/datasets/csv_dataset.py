"""Labelled SMILES tables (CSV files) as in-memory PyG datasets."""
from __future__ import annotations

import hashlib
import json
import os.path as osp
import shutil
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch_geometric.data import Data, InMemoryDataset
from tqdm import tqdm

from pyg_molblend.data.featurize import from_smiles
from pyg_molblend.datasets.utils import apply_transform

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TASK_TYPES", "CSVDataset", "SmilesTableDataset"]

#: Task types of a labelled dataset: binary labels (0/1, NaN for missing) per task, or
#: real-valued targets.
TASK_TYPES = ("classification", "regression")

Transform = Callable[[Data], Data]
Filter = Callable[[Data], bool]


def read_csv_table(path: str, sep: str = ",") -> pd.DataFrame:
    """Reads a CSV file (optionally compressed) as strings.

    Quoted fields, CRLF line endings and blank lines are handled by pandas; every field
    stays a string (empty for a missing value), so that SMILES such as ``"NA"`` are not
    turned into NaN.
    """
    import pandas as pd

    return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, skip_blank_lines=True)


def parse_targets(table: pd.DataFrame, columns: Sequence[str], task_type: str) -> torch.Tensor:
    """Target columns of :obj:`table` as a float tensor ``[num_rows, len(columns)]``,
    NaN where a value is missing (an empty field or ``nan``).

    Raises:
        ValueError: naming the column, row and value of a non-numeric entry or of a
            classification label other than 0 or 1, or naming a column without any label.
    """
    import pandas as pd

    out = torch.empty(len(table), len(columns), dtype=torch.float)
    for k, column in enumerate(columns):
        text = table[column].str.strip()
        values = pd.to_numeric(text.mask(text == ""), errors="coerce")
        bad = values.isna() & (text != "") & (text.str.lower() != "nan")
        if bad.any():
            row = int(bad.idxmax())
            raise ValueError(
                f"Target column {column!r} has a non-numeric value {text[row]!r} in row {row}"
            )
        if values.isna().all():
            raise ValueError(f"Target column {column!r} has no labels (every value is missing)")
        if task_type == "classification":
            wrong = values.notna() & ~values.isin([0.0, 1.0])
            if wrong.any():
                row = int(wrong.idxmax())
                raise ValueError(
                    f"Classification target column {column!r} must hold 0 or 1 (or be empty), "
                    f"got {text[row]!r} in row {row}"
                )
        out[:, k] = torch.from_numpy(values.to_numpy(dtype="float32"))
    return out


class SmilesTableDataset(InMemoryDataset):
    r"""Base class of the labelled SMILES datasets (:class:`CSVDataset`,
    :class:`~pyg_molblend.datasets.MoleculeNet`).

    Each row becomes a :func:`~pyg_molblend.data.from_smiles` graph (``x`` ``[N, 9]`` and
    ``edge_attr`` ``[E, 3]`` long, ``smiles``) with targets ``y`` ``[1, num_tasks]``
    (float, NaN for a missing label). Rows are numbered from 0, counting data rows after
    the header; blank lines are not rows.

    Rows whose every target is missing are skipped with one warning giving their count
    and listed in :attr:`unlabeled`. A SMILES that RDKit cannot parse raises a
    :class:`ValueError` naming the row and the string, or with :obj:`skip_invalid` is
    skipped with one warning giving the count and listed in :attr:`skipped`. Both lists
    hold ``(row, smiles)`` pairs and are saved next to the processed graphs.

    ``pre_filter`` is applied before ``pre_transform``; ``pre_transform`` runs through
    :func:`~pyg_molblend.datasets.utils.apply_transform` on :obj:`num_workers`
    processes, and its results are cached on disk.

    Subclasses define :meth:`read_table` and :meth:`options_key`.

    Attributes:
        task_type (str): :obj:`"classification"` or :obj:`"regression"`.
        target_names (list[str]): the target columns, in the order of ``y``'s columns.
        skipped (list[tuple[int, str]]): rows dropped for an invalid SMILES.
        unlabeled (list[tuple[int, str]]): rows dropped for having no label at all.
    """

    def __init__(
        self,
        root: str,
        task_type: str,
        transform: Transform | None = None,
        pre_transform: Transform | None = None,
        pre_filter: Filter | None = None,
        skip_invalid: bool = False,
        num_workers: int = 0,
        force_reload: bool = False,
    ) -> None:
        if task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}")
        self.task_type = task_type
        self.skip_invalid = skip_invalid
        self.num_workers = num_workers
        super().__init__(root, transform, pre_transform, pre_filter, force_reload=force_reload)
        self.load(self.processed_paths[0])
        with open(self.processed_paths[1]) as f:
            meta = json.load(f)
        self.target_names: list[str] = meta["target_names"]
        self.skipped = [(int(row), str(smiles)) for row, smiles in meta["skipped"]]
        self.unlabeled = [(int(row), str(smiles)) for row, smiles in meta["unlabeled"]]

    @property
    def display_name(self) -> str:
        """Name used in progress bars, messages and :func:`repr`."""
        raise NotImplementedError

    def read_table(self) -> tuple[pd.DataFrame, str, list[str]]:
        """The raw table, its SMILES column and its target columns."""
        raise NotImplementedError

    def options_key(self) -> str:
        """A short string that changes whenever an option changes the processed content."""
        raise NotImplementedError

    @property
    def processed_file_names(self) -> list[str]:
        # The pre_transform changes the cached content (conformers or not, say): key the
        # cache on its repr so that differently pre-transformed copies live side by side.
        digest = hashlib.sha1(repr(self.pre_transform).encode()).hexdigest()[:8]
        key = f"{self.options_key()}_{digest}"
        return [f"data_{key}.pt", f"meta_{key}.json"]

    @property
    def num_tasks(self) -> int:
        """Number of targets (columns of ``y``)."""
        return len(self.target_names)

    @property
    def smiles(self) -> list[str]:
        """The SMILES of the graphs in this dataset (or subset), in order."""
        return [self._data.smiles[i] for i in self.indices()]

    def process(self) -> None:
        table, smiles_column, target_columns = self.read_table()
        targets = parse_targets(table, target_columns, self.task_type)
        data_list: list[Data] = []
        skipped: list[tuple[int, str]] = []
        unlabeled: list[tuple[int, str]] = []
        smiles_list = table[smiles_column].str.strip().tolist()
        for row, smiles in enumerate(tqdm(smiles_list, desc=f"Featurizing {self.display_name}")):
            y = targets[row].view(1, -1)
            if bool(y.isnan().all()):
                unlabeled.append((row, smiles))
                continue
            try:
                data = from_smiles(smiles)
            except ValueError as error:
                if not self.skip_invalid:
                    raise ValueError(
                        f"Row {row} of {self.raw_paths[0]!r} has an invalid SMILES "
                        f"{smiles!r} ({error}); pass skip_invalid=True to skip such rows"
                    ) from error
                skipped.append((row, smiles))
                continue
            data.y = y
            if self.pre_filter is None or self.pre_filter(data):
                data_list.append(data)
        if unlabeled:
            warnings.warn(
                f"Skipped {len(unlabeled)} rows of {self.raw_paths[0]!r} without any label "
                f"(see .unlabeled)",
                stacklevel=2,
            )
        if skipped:
            warnings.warn(
                f"Skipped {len(skipped)} rows of {self.raw_paths[0]!r} with an invalid SMILES "
                f"(first: row {skipped[0][0]}, {skipped[0][1]!r}; see .skipped)",
                stacklevel=2,
            )
        if self.pre_transform is not None:
            data_list = apply_transform(
                data_list,
                self.pre_transform,
                self.num_workers,
                desc=f"Pre-transforming {self.display_name}",
            )
        self.save(data_list, self.processed_paths[0])
        meta: dict[str, Any] = {
            "target_names": list(target_columns),
            "skipped": skipped,
            "unlabeled": unlabeled,
        }
        with open(self.processed_paths[1], "w") as f:
            json.dump(meta, f)

    def __repr__(self) -> str:
        return f"{self.display_name}({len(self)})"


class CSVDataset(SmilesTableDataset):
    r"""A generic labelled SMILES table, for example a proprietary assay.

    The file is copied into ``<root>/raw/`` whenever it is processed (on first use, and
    with :obj:`force_reload`, so pass that after editing the file) and processed into
    ``<root>/processed/``; the processed file name depends on the columns, the task type
    and :obj:`skip_invalid`, so datasets built with different options never share a cache.
    Missing labels (empty fields) become NaN. See :class:`SmilesTableDataset` for how
    unlabeled rows, invalid SMILES and ``pre_transform`` are handled.

    Args:
        root (str): directory for the raw copy and the processed files.
        csv_path (str): the CSV file (``.csv``, or compressed such as ``.csv.gz``), with a
            header row.
        smiles_column (str): name of the SMILES column.
        target_columns (Sequence[str]): names of the target columns (at least one).
        task_type (str): :obj:`"classification"` (labels 0/1) or :obj:`"regression"`.
        transform (callable, optional): applied to each graph on access. (default: :obj:`None`)
        pre_transform (callable, optional): applied once before saving, for example
            :class:`~pyg_molblend.transforms.AddConformer`. (default: :obj:`None`)
        pre_filter (callable, optional): keeps the graphs for which it returns
            :obj:`True`. (default: :obj:`None`)
        skip_invalid (bool, optional): skip rows with an invalid SMILES instead of raising.
            (default: :obj:`False`)
        num_workers (int, optional): processes that run :obj:`pre_transform`.
            (default: :obj:`0`)
        force_reload (bool, optional): process again even if a cache exists.
            (default: :obj:`False`)

    Raises:
        ValueError: if a column is missing (naming it and listing the available ones), a
            target column has no label or a non-numeric value, the task type is unknown,
            or a SMILES is invalid and :obj:`skip_invalid` is :obj:`False`.
    """

    def __init__(
        self,
        root: str,
        csv_path: str,
        smiles_column: str,
        target_columns: Sequence[str],
        task_type: str,
        transform: Transform | None = None,
        pre_transform: Transform | None = None,
        pre_filter: Filter | None = None,
        skip_invalid: bool = False,
        num_workers: int = 0,
        force_reload: bool = False,
    ) -> None:
        if isinstance(target_columns, str):
            target_columns = [target_columns]
        if len(target_columns) == 0:
            raise ValueError("target_columns must name at least one column, got none")
        self.csv_path = str(csv_path)
        self.smiles_column = smiles_column
        self.target_columns = list(target_columns)
        super().__init__(
            root,
            task_type,
            transform,
            pre_transform,
            pre_filter,
            skip_invalid=skip_invalid,
            num_workers=num_workers,
            force_reload=force_reload,
        )

    @property
    def raw_file_names(self) -> list[str]:
        return [osp.basename(self.csv_path)]

    def download(self) -> None:
        if not osp.isfile(self.csv_path):
            raise FileNotFoundError(f"CSV file not found: {self.csv_path!r}")
        shutil.copy(self.csv_path, self.raw_paths[0])

    def options_key(self) -> str:
        options = [
            self.raw_file_names[0],
            self.smiles_column,
            self.target_columns,
            self.task_type,
            self.skip_invalid,
        ]
        return hashlib.sha1(json.dumps(options).encode()).hexdigest()[:12]

    def process(self) -> None:
        if osp.isfile(self.csv_path):  # refresh the raw copy (force_reload after an edit)
            self.download()
        super().process()

    def read_table(self) -> tuple[pd.DataFrame, str, list[str]]:
        table = read_csv_table(self.raw_paths[0])
        available = list(table.columns)
        for column in [self.smiles_column, *self.target_columns]:
            if column not in available:
                raise ValueError(
                    f"Column {column!r} not found in {self.raw_paths[0]!r}; available "
                    f"columns: {available}"
                )
        return table, self.smiles_column, self.target_columns

    @property
    def display_name(self) -> str:
        return osp.basename(self.csv_path)
