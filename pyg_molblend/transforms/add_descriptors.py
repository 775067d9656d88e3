"""Per-molecule descriptors (extra features next to the graph embedding) from a table."""

from __future__ import annotations

import hashlib
import os
import os.path as osp

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

__all__ = ["AddDescriptors", "read_descriptors"]


@functional_transform("add_descriptors")
class AddDescriptors(BaseTransform):
    r"""Adds the descriptors of a molecule's table row (functional name:
    :obj:`add_descriptors`).

    ``data.descriptors`` ``[1, D]`` (``float32``) is row ``data.source_row`` of
    :obj:`table`: the molecule's data row in the CSV file it was read from, which every
    graph of :class:`~pyg_molblend.datasets.CSVDataset` and
    :class:`~pyg_molblend.datasets.MoleculeNet` carries (rows skipped for an invalid SMILES
    keep the numbering right). A :class:`~torch_geometric.data.Batch` stacks them to
    ``[B, D]`` for :class:`~pyg_molblend.models.MoleBlendPredictor` with
    ``num_descriptors=D``.

    Its :func:`repr` holds a digest of the table, so that a dataset cache keyed by its
    transforms changes with the descriptors.

    Args:
        table (np.ndarray or Tensor): ``[num_rows, D]`` descriptors, row :math:`i` for
            data row :math:`i` of the input file (:func:`read_descriptors`).

    Raises:
        ValueError: if :obj:`table` is not 2-dimensional and numeric; when called, for a
            graph without ``source_row``, a row outside the table, or a NaN or infinite
            value in the row (naming the row and column).

    Examples:
        >>> from pyg_molblend.data import from_smiles
        >>> table = torch.tensor([[0.5, 1.0], [2.0, -3.0]])
        >>> data = from_smiles("CCO")
        >>> data.source_row = torch.tensor([1])
        >>> AddDescriptors(table)(data).descriptors
        tensor([[ 2., -3.]])
    """

    def __init__(self, table: np.ndarray | Tensor) -> None:
        if isinstance(table, Tensor):
            table = table.detach().cpu().numpy()
        array = np.asarray(table)
        if array.dtype.kind not in "biuf":
            raise ValueError(f"AddDescriptors needs a numeric table, got dtype {array.dtype}")
        if array.ndim != 2:
            raise ValueError(
                f"AddDescriptors needs a table [num_rows, num_descriptors], got shape "
                f"{list(array.shape)}"
            )
        self.table = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        self._digest = hashlib.sha256(self.table.numpy().tobytes()).hexdigest()[:16]

    @property
    def num_descriptors(self) -> int:
        """:math:`D`, the number of columns."""
        return self.table.size(1)

    def forward(self, data: Data) -> Data:
        source_row = getattr(data, "source_row", None)
        name = repr(getattr(data, "smiles", "this molecule"))
        if source_row is None or source_row.numel() != 1:
            raise ValueError(
                f"AddDescriptors picks the table row by data.source_row ([1], the data row of "
                f"the input CSV), which {name} does not have"
            )
        row = int(source_row.view(-1)[0])
        if not 0 <= row < self.table.size(0):
            raise ValueError(
                f"Molecule {name} is data row {row}, but the descriptor table has "
                f"{self.table.size(0)} rows"
            )
        values = self.table[row]
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            column = int((~finite).nonzero()[0])
            raise ValueError(
                f"Descriptor column {column} of row {row} ({name}) is "
                f"{values[column].item()}; descriptors must be finite"
            )
        data.descriptors = values.view(1, -1).clone()
        return data

    def __repr__(self) -> str:
        rows, columns = self.table.shape
        return (
            f"{self.__class__.__name__}(rows={rows}, descriptors={columns}, sha256={self._digest})"
        )


def read_descriptors(path: str | os.PathLike) -> np.ndarray:
    """A descriptor table ``[num_rows, D]`` (``float64``) for :class:`AddDescriptors`, with
    row :math:`i` for data row :math:`i` of the input CSV.

    Formats, by extension:

    * ``.npy``: a 2-dimensional numeric array.
    * ``.npz``: the array named ``descriptors``, or else the first one.
    * ``.csv`` (optionally ``.gz``, ``.bz2`` or ``.xz`` compressed): a header row, then one
      row per data row, every column a number (an empty cell is NaN, which
      :class:`AddDescriptors` refuses only for rows it is asked for). Identifier or SMILES
      columns must be dropped.

    Raises:
        ValueError: naming the file when it does not exist, has another extension, holds
            no rows or no columns or another number of dimensions than 2, or (CSV) a cell
            that is not a number (with its line and column).

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "descriptors.csv"
        >>> _ = path.write_text("mol_wt,logp\\n46.07,-0.31\\n45.08,-0.65\\n")
        >>> read_descriptors(path).tolist()
        [[46.07, -0.31], [45.08, -0.65]]
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise ValueError(f"Descriptor file {path!r} does not exist")
    lower = path.lower()
    if lower.endswith(".npy"):
        array = _load_numpy(path, lambda: np.load(path, allow_pickle=False))
    elif lower.endswith(".npz"):
        array = _load_numpy(path, lambda: _first_array(path))
    elif lower.endswith((".csv", ".csv.gz", ".csv.bz2", ".csv.xz")):
        array = _read_csv(path)
    else:
        raise ValueError(f"Descriptor file {path!r}: unknown extension; use .npy, .npz or .csv")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"Descriptor file {path!r} holds {array.dtype} values, not numbers")
    if array.ndim != 2:
        raise ValueError(
            f"Descriptor file {path!r} holds an array of shape {list(array.shape)}; "
            "expected 2 dimensions [num_rows, num_descriptors] (one descriptor per row: "
            "reshape(-1, 1))"
        )
    if 0 in array.shape:
        raise ValueError(
            f"Descriptor file {path!r} holds no descriptors (shape {list(array.shape)})"
        )
    return array.astype(np.float64)


def _load_numpy(path: str, load) -> np.ndarray:
    try:
        return np.asarray(load())
    except ValueError as error:
        raise ValueError(f"Descriptor file {path!r} cannot be read: {error}") from error
    except OSError as error:
        raise ValueError(f"Descriptor file {path!r} is not a NumPy file: {error}") from error


def _first_array(path: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        if not archive.files:
            raise ValueError("the archive holds no array")
        key = "descriptors" if "descriptors" in archive.files else archive.files[0]
        return archive[key]


def _read_csv(path: str) -> np.ndarray:
    import pandas as pd

    from pyg_molblend.datasets.csv_dataset import read_csv_table

    table = read_csv_table(path)
    out = np.empty(table.shape, dtype=np.float64)
    for k, column in enumerate(table.columns):
        text = table[column].str.strip()
        values = pd.to_numeric(text.replace("", "nan"), errors="coerce").to_numpy(np.float64)
        wrong = np.isnan(values) & ~text.str.lower().isin(["", "nan"]).to_numpy()
        if wrong.any():
            i = int(wrong.argmax())
            raise ValueError(
                f"Descriptor file {path!r}, line {table.index[i]}, column {column!r}: "
                f"{text.iloc[i]!r} is not a number (every column must be a descriptor; drop "
                "identifier and SMILES columns)"
            )
        out[:, k] = values
    return out
