"""AddDescriptors (a table row per molecule, by source_row) and read_descriptors."""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from pyg_molblend.data import from_smiles
from pyg_molblend.datasets import CSVDataset
from pyg_molblend.transforms import AddDescriptors, read_descriptors

TABLE = np.array([[0.5, 1.0, -1.0], [2.0, -3.0, 4.0], [7.0, 8.0, 9.0]])


def _graph(smiles: str, row: int):
    graph = from_smiles(smiles)
    graph.source_row = torch.tensor([row])
    return graph


def test_rows_are_picked_by_source_row_and_batch_to_b_by_d():
    transform = AddDescriptors(TABLE)
    graphs = [transform(_graph("CCO", 2)), transform(_graph("CCN", 0))]
    assert graphs[0].descriptors.tolist() == [[7.0, 8.0, 9.0]]
    assert graphs[0].descriptors.dtype == torch.float32
    batch = Batch.from_data_list(graphs)
    assert batch.descriptors.tolist() == [[7.0, 8.0, 9.0], [0.5, 1.0, -1.0]]
    assert transform.num_descriptors == 3
    # a tensor table works the same; the stored row is a copy, not a view of the table
    same = AddDescriptors(torch.from_numpy(TABLE))(_graph("CCO", 1))
    same.descriptors += 1
    assert AddDescriptors(TABLE)(_graph("CCO", 1)).descriptors.tolist() == [[2.0, -3.0, 4.0]]


def test_non_finite_values_name_row_and_column():
    table = TABLE.copy()
    table[1, 2] = np.nan
    table[2, 0] = np.inf
    transform = AddDescriptors(table)
    assert transform(_graph("CCO", 0)).descriptors.tolist() == [[0.5, 1.0, -1.0]]  # row 0 fine
    with pytest.raises(ValueError, match=r"column 2 of row 1 .* is nan"):
        transform(_graph("CCO", 1))
    with pytest.raises(ValueError, match=r"column 0 of row 2 .* is inf"):
        transform(_graph("CCO", 2))


def test_bad_graphs_and_tables_are_refused():
    transform = AddDescriptors(TABLE)
    with pytest.raises(ValueError, match="source_row"):
        transform(from_smiles("CCO"))
    with pytest.raises(ValueError, match="data row 3, but the descriptor table has 3 rows"):
        transform(_graph("CCO", 3))
    with pytest.raises(ValueError, match=r"got shape \[3\]"):
        AddDescriptors(np.ones(3))
    with pytest.raises(ValueError, match="numeric"):
        AddDescriptors(np.array([["a", "b"]]))


def test_repr_changes_with_the_table():
    changed = TABLE.copy()
    changed[0, 0] = 0.25
    assert repr(AddDescriptors(TABLE)).startswith("AddDescriptors(rows=3, descriptors=3, sha256=")
    assert repr(AddDescriptors(TABLE)) == repr(AddDescriptors(TABLE.copy()))
    assert repr(AddDescriptors(TABLE)) != repr(AddDescriptors(changed))


def test_csv_dataset_rows_stay_aligned_when_rows_are_skipped(tmp_path):
    csv = tmp_path / "assay.csv"
    csv.write_text("smiles,active\nC1CC,1\nCCO,0\nCCN,1\n")  # row 0 is an invalid SMILES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = CSVDataset(
            str(tmp_path / "root"),
            csv,
            "smiles",
            ["active"],
            "classification",
            skip_invalid=True,
            transform=AddDescriptors(TABLE),
        )
    assert dataset.source_rows == [1, 2]
    assert dataset[0].descriptors.tolist() == [[2.0, -3.0, 4.0]]
    assert dataset[1].descriptors.tolist() == [[7.0, 8.0, 9.0]]


def test_read_csv_npy_npz(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("a,b\n1.5,2\n\n-3e2, 4\n,nan\n")  # blank line: not a row; empty: NaN
    out = read_descriptors(csv)
    assert out.dtype == np.float64 and out.shape == (3, 2)
    np.testing.assert_array_equal(out[:2], [[1.5, 2.0], [-300.0, 4.0]])
    assert np.isnan(out[2]).all()
    with gzip.open(tmp_path / "d.csv.gz", "wt") as f:
        f.write("a,b\n1,2\n")
    assert read_descriptors(tmp_path / "d.csv.gz").tolist() == [[1.0, 2.0]]

    np.save(tmp_path / "d.npy", TABLE.astype(np.float32))
    np.testing.assert_array_equal(read_descriptors(tmp_path / "d.npy"), TABLE.astype(np.float32))
    np.savez(tmp_path / "first.npz", TABLE, np.zeros((1, 1)))
    np.testing.assert_array_equal(read_descriptors(tmp_path / "first.npz"), TABLE)
    np.savez(tmp_path / "named.npz", other=np.zeros((1, 1)), descriptors=TABLE)
    np.testing.assert_array_equal(read_descriptors(tmp_path / "named.npz"), TABLE)
    np.save(tmp_path / "ints.npy", np.arange(4).reshape(2, 2))
    assert read_descriptors(tmp_path / "ints.npy").tolist() == [[0.0, 1.0], [2.0, 3.0]]


def test_read_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.csv"
    with pytest.raises(ValueError, match=r"missing\.csv' does not exist"):
        read_descriptors(missing)
    bad = tmp_path / "bad.csv"
    bad.write_text("mol_wt,logp\n46.07,-0.31\n45.08,high\n")
    with pytest.raises(ValueError, match=r"bad.csv', line 3, column 'logp': 'high' is not a"):
        read_descriptors(bad)
    text = tmp_path / "smiles.csv"
    text.write_text("smiles,mol_wt\nCCO,46.07\n")
    with pytest.raises(ValueError, match=r"line 2, column 'smiles'.*drop identifier"):
        read_descriptors(text)
    empty = tmp_path / "empty.csv"
    empty.write_text("a,b\n")
    with pytest.raises(ValueError, match=r"empty.csv' holds no descriptors \(shape \[0, 2\]\)"):
        read_descriptors(empty)
    np.save(tmp_path / "flat.npy", np.ones(4))
    with pytest.raises(ValueError, match=r"flat.npy' holds an array of shape \[4\]; expected 2"):
        read_descriptors(tmp_path / "flat.npy")
    np.save(tmp_path / "cube.npy", np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match=r"cube.npy' .* \[2, 2, 2\]"):
        read_descriptors(tmp_path / "cube.npy")
    np.save(tmp_path / "words.npy", np.array([["a", "b"]]))
    with pytest.raises(ValueError, match=r"words\.npy' holds <U1 values, not numbers"):
        read_descriptors(tmp_path / "words.npy")
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match=r"broken\.npy'"):
        read_descriptors(tmp_path / "broken.npy")
    np.savez(tmp_path / "none.npz")
    with pytest.raises(ValueError, match=r"none\.npz'.*no array"):
        read_descriptors(tmp_path / "none.npz")
    (tmp_path / "d.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match=r"d\.parquet': unknown extension"):
        read_descriptors(tmp_path / "d.parquet")
