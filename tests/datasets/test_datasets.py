from __future__ import annotations

import ast
import csv
import math
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch_geometric.data import Data

from pyg_molblend.data import from_smiles, scaffold_split
from pyg_molblend.datasets import (
    HARTREE_TO_EV,
    QM9,
    CSVDataset,
    MoleculeNet,
    apply_transform,
    default_dataset,
    evaluate_ogb,
    load_ogb,
)
from pyg_molblend.datasets.utils import cache_key
from pyg_molblend.transforms import AddConformer, AddShortestPath

DATA = Path(__file__).parents[1] / "assets"

ESOL_TARGET = "measured log solubility in mols per litre"


def _write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        f.write(text.replace("\n", newline))
    return path


def _edge_set(data) -> set[tuple[int, int, tuple[int, ...]]]:
    return {
        (i, j, tuple(attr))
        for (i, j), attr in zip(
            data.edge_index.t().tolist(), data.edge_attr.tolist(), strict=True
        )
    }


# --------------------------------------------------------------------------- MoleculeNet


@pytest.fixture(scope="module")
def esol(tmp_path_factory) -> MoleculeNet:
    root = tmp_path_factory.mktemp("molnet")
    (root / "esol" / "raw").mkdir(parents=True)
    shutil.copy(DATA / "delaney-processed.csv", root / "esol" / "raw")
    with pytest.warns(UserWarning, match="3 rows .* different labels"):  # stereoisomers
        return MoleculeNet(str(root), "ESOL")


def test_esol_matches_csv(esol):
    with open(DATA / "delaney-processed.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(esol) == len(rows) == 1128
    assert esol.task_type == "regression"
    assert esol.num_tasks == 1 and esol.target_names == [ESOL_TARGET]
    y = torch.cat([esol[i].y for i in range(len(esol))])
    assert y.shape == (1128, 1) and y.dtype == torch.float
    expected = torch.tensor([float(row[ESOL_TARGET]) for row in rows])
    assert torch.allclose(y[:, 0], expected)
    assert esol.smiles == [row["smiles"].strip() for row in rows]
    assert esol.skipped == [] and esol.unlabeled == []
    data = esol[1]
    reference = from_smiles(rows[1]["smiles"])
    assert torch.equal(data.x, reference.x) and torch.equal(data.edge_attr, reference.edge_attr)
    assert data.x.dtype == data.edge_attr.dtype == torch.long
    assert repr(esol) == "ESOL(1128)"
    assert esol[10:20].smiles == esol.smiles[10:20]


def test_cache_key_follows_bytes_not_file_times(tmp_path):
    path = tmp_path / "library.csv"
    path.write_text("smiles\nCCO\nc1ccccc1\n")
    key = cache_key([path], {})
    # Re-provisioned or copied again: new times, same bytes, same key.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns + 10**12, stat.st_mtime_ns + 10**12))
    assert path.stat().st_mtime_ns != stat.st_mtime_ns
    assert cache_key([path], {}) == key
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(path, copy / "library.csv")
    os.replace(copy / "library.csv", path)  # another inode, same bytes
    assert cache_key([path], {}) == key
    # Same size, other bytes: another key.
    path.write_text("smiles\nCCN\nc1ccccc1\n")
    assert cache_key([path], {}) != key


def test_esol_uses_cache(esol):
    processed = Path(esol.processed_paths[0])
    mtime = processed.stat().st_mtime_ns
    again = MoleculeNet(esol.root, "esol")
    assert processed.stat().st_mtime_ns == mtime
    assert len(again) == 1128 and again.target_names == [ESOL_TARGET]
    # An option that changes the content gets its own processed file.
    with pytest.warns(UserWarning, match="different labels"):
        skipping = MoleculeNet(esol.root, "esol", skip_invalid=True)
    assert skipping.processed_paths[0] != esol.processed_paths[0]
    assert len(skipping) == 1128


def test_molecule_net_unknown_name(tmp_path):
    with pytest.raises(ValueError, match=r"'qm7'.*available.*'bbbp'"):
        MoleculeNet(str(tmp_path), "qm7")


FREESOLV = """iupac,smiles,expt,calc
"4-methoxy-N,N-dimethyl-benzamide",CN(C)C(=O)c1ccc(cc1)OC,-11.01,-9.625

methanesulfonyl chloride,CS(=O)(=O)Cl,-4.87,-6.219
not a molecule,C1CC(,-1.0,-2.0
"3,3-dimethylbutan-2-one",CC(=O)C(C)(C)C,-2.93,-3.4
ethanol,CCO,,-4.0
"""


def test_molecule_net_quoted_crlf_blank_lines_and_invalid_row(tmp_path):
    _write(tmp_path / "freesolv" / "raw" / "SAMPL.csv", FREESOLV, newline="\r\n")
    with pytest.raises(ValueError, match=r"SAMPL\.csv, line 5: .*'C1CC\('.*skip_invalid=True"):
        MoleculeNet(str(tmp_path), "FreeSolv")

    with pytest.warns(UserWarning) as record:
        dataset = MoleculeNet(str(tmp_path), "FreeSolv", skip_invalid=True)
    messages = [str(w.message) for w in record]
    assert sum("Skipped 1 molecules" in m and "invalid SMILES" in m for m in messages) == 1
    assert sum("Skipped 1 rows" in m and "without any label" in m for m in messages) == 1
    assert dataset.skipped == [(2, "C1CC(")]
    assert dataset.unlabeled == [(4, "CCO")]
    assert dataset.smiles == ["CN(C)C(=O)c1ccc(cc1)OC", "CS(=O)(=O)Cl", "CC(=O)C(C)(C)C"]
    assert torch.cat([d.y for d in dataset]).view(-1).tolist() == pytest.approx(
        [-11.01, -4.87, -2.93]
    )
    assert dataset.target_names == ["expt"]

    # The lists survive a reload from the cache.
    again = MoleculeNet(str(tmp_path), "freesolv", skip_invalid=True)
    assert again.skipped == [(2, "C1CC(")] and again.unlabeled == [(4, "CCO")]


def test_molecule_net_multitask_missing_labels(tmp_path):
    tasks = [f"T{k}" for k in range(12)]
    lines = [",".join([*tasks, "mol_id", "smiles"])]
    lines.append(",".join(["1", "", "0"] + [""] * 9 + ["m1", "CCO"]))
    lines.append(",".join([""] * 12 + ["m2", "CCN"]))  # no label at all
    lines.append(",".join(["0"] * 11 + ["1", "m3", "c1ccccc1"]))
    _write(tmp_path / "tox21" / "raw" / "tox21.csv", "\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="Skipped 1 rows .* without any label"):
        dataset = MoleculeNet(str(tmp_path), "tox21")
    assert dataset.task_type == "classification"
    assert dataset.num_tasks == 12 and dataset.target_names == tasks
    assert len(dataset) == 2 and dataset.unlabeled == [(1, "CCN")]
    y = dataset[0].y
    assert y.shape == (1, 12)
    assert y[0, 0].item() == 1.0 and y[0, 2].item() == 0.0
    assert torch.isnan(y[0, 1]) and torch.isnan(y[0, 3:]).all()
    assert dataset[1].y.tolist() == [[0.0] * 11 + [1.0]]


def test_default_dataset(tmp_path):
    with pytest.warns(UserWarning, match="Skipped 11 molecules"):
        dataset = default_dataset(str(tmp_path))
    assert (tmp_path / "bbbp" / "raw" / "BBBP.csv").exists()
    assert len(dataset) == 2039 and len(dataset.skipped) == 11
    assert dataset.task_type == "classification" and dataset.target_names == ["p_np"]
    labels = torch.cat([d.y for d in dataset]).view(-1)
    assert set(labels.tolist()) == {0.0, 1.0}
    assert dataset[0].smiles == "[Cl].CC(C)NCC(O)COc1cccc2ccccc12"


# --------------------------------------------------------------------------- CSVDataset

ASSAY = """name,SMILES,activity,solubility,empty
a,CCO,1,0.5,
b,c1ccccc1,0,,
c,CC(=O)O,,1.5,
d,CCN,1,2.5,
"""


def test_csv_dataset(tmp_path):
    path = _write(tmp_path / "assay.csv", ASSAY)
    with pytest.warns(UserWarning, match="Skipped 1 rows .* without any label"):
        dataset = CSVDataset(
            str(tmp_path / "ds"), str(path), "SMILES", ["solubility"], "regression"
        )
    assert len(dataset) == 3  # row 1 has no solubility label
    assert dataset.unlabeled == [(1, "c1ccccc1")]
    assert torch.cat([d.y for d in dataset]).view(-1).tolist() == [0.5, 1.5, 2.5]
    assert not (tmp_path / "ds" / "raw").exists()  # read in place, no copy to go stale

    both = CSVDataset(
        str(tmp_path / "ds"), str(path), "SMILES", ["activity", "solubility"], "regression"
    )
    assert both.processed_paths[0] != dataset.processed_paths[0]
    assert len(both) == 4 and both.num_tasks == 2
    y = torch.cat([d.y for d in both])
    assert y[0].tolist() == [1.0, 0.5]
    assert y[1, 0].item() == 0.0 and math.isnan(y[1, 1].item())
    assert math.isnan(y[2, 0].item()) and y[2, 1].item() == 1.5

    with pytest.warns(UserWarning, match="Skipped 1 rows .* without any label"):
        classification = CSVDataset(
            str(tmp_path / "ds"), str(path), "SMILES", "activity", "classification"
        )
    assert classification.task_type == "classification" and len(classification) == 3
    assert classification.unlabeled == [(2, "CC(=O)O")]

    # After the file changes, its new content is read (the cache is keyed on it).
    _write(path, ASSAY.replace("d,CCN,1,2.5,", "d,CCCN,1,3.5,"))
    columns = ["activity", "solubility"]
    edited = CSVDataset(str(tmp_path / "ds"), str(path), "SMILES", columns, "regression")
    assert edited.smiles[-1] == "CCCN" and edited[3].y.tolist() == [[1.0, 3.5]]
    reloaded = CSVDataset(
        str(tmp_path / "ds"), str(path), "SMILES", columns, "regression", force_reload=True
    )
    assert reloaded.smiles == edited.smiles and reloaded.source_rows == [0, 1, 2, 3]


def test_csv_dataset_errors(tmp_path):
    path = _write(tmp_path / "assay.csv", ASSAY)
    root = str(tmp_path / "ds")
    with pytest.raises(ValueError, match=r"'smiles' not found.*\['name', 'SMILES'"):
        CSVDataset(root, str(path), "smiles", ["activity"], "regression")
    with pytest.raises(ValueError, match=r"'pIC50' not found.*'activity'"):
        CSVDataset(root, str(path), "SMILES", ["activity", "pIC50"], "regression")
    with pytest.raises(ValueError, match="'empty' has no labels"):
        CSVDataset(root, str(path), "SMILES", ["empty"], "regression")
    with pytest.raises(ValueError, match=r"line 2, column 'solubility': .* 0 or 1.*'0\.5'"):
        CSVDataset(root, str(path), "SMILES", ["solubility"], "classification")
    with pytest.raises(ValueError, match=r"assay\.csv, line 2, column 'name': target 'a' is not"):
        CSVDataset(root, str(path), "SMILES", ["name"], "regression")
    with pytest.raises(ValueError, match="'ranking'"):
        CSVDataset(root, str(path), "SMILES", ["activity"], "ranking")
    with pytest.raises(ValueError, match="at least one"):
        CSVDataset(root, str(path), "SMILES", [], "regression")
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        CSVDataset(str(tmp_path / "other"), str(tmp_path / "missing.csv"), "s", ["y"], "regression")


def test_csv_dataset_multiclass_labels_and_num_classes(tmp_path):
    path = _write(tmp_path / "phase.csv", "smiles,phase,shape\nCCO,2,0\nCCN,0,\nCCC,1,1\n")
    root = str(tmp_path / "ds")
    dataset = CSVDataset(root, str(path), "smiles", ["phase", "shape"], "multiclass")
    assert dataset.num_classes == 3  # the largest label, 2, plus one
    assert dataset[1].y.view(-1)[0].item() == 0.0 and dataset[1].y.view(-1)[1].isnan()
    wider = CSVDataset(root, str(path), "smiles", ["phase"], "multiclass", num_classes=5)
    assert wider.num_classes == 5
    with pytest.warns(UserWarning, match="Skipped 1 rows .* without any label"):
        binary = CSVDataset(root, str(path), "smiles", ["shape"], "classification")
    assert binary.num_classes == 2  # PyG's own count for the other task types
    with pytest.raises(ValueError, match=r"line 2, column 'phase': .*\(0 to 1\) .*got '2'"):
        CSVDataset(root, str(path), "smiles", ["phase"], "multiclass", num_classes=2)
    for bad in ("1.5", "-1", "x"):
        bad_path = _write(tmp_path / "bad.csv", f"smiles,phase\nCCO,0\nCCN,{bad}\n")
        with pytest.raises(ValueError, match=rf"bad\.csv, line 3, column 'phase'.*'{bad}'"):
            CSVDataset(str(tmp_path / "bad"), str(bad_path), "smiles", ["phase"], "multiclass")
    with pytest.raises(ValueError, match="num_classes is for multiclass"):
        CSVDataset(root, str(path), "smiles", ["shape"], "classification", num_classes=3)
    with pytest.raises(ValueError, match="at least 2, got 1"):
        CSVDataset(root, str(path), "smiles", ["phase"], "multiclass", num_classes=1)


# ------------------------------------------------------------------- pre_transform workers

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C1CCNCC1", "OC(=O)CCC(N)C(=O)O"]


def test_apply_transform_workers_match_serial():
    data_list = [from_smiles(s) for s in SMILES * 2]
    serial = apply_transform([d.clone() for d in data_list], AddConformer(seed=3))
    parallel = apply_transform(
        [d.clone() for d in data_list], AddConformer(seed=3), num_workers=2
    )
    assert len(serial) == len(parallel) == 10
    for a, b in zip(serial, parallel, strict=True):
        assert a.smiles == b.smiles
        assert bool(a.has_pos.all()) and torch.equal(a.pos, b.pos)
    with pytest.raises(ValueError, match="-1"):
        apply_transform(data_list, AddConformer(), num_workers=-1)


def test_apply_transform_sends_only_each_graphs_own_elements():
    # A graph whose y is a row of a dataset-wide table (ToxCast: 8,576 x 617) pickles the
    # whole table unless the view is copied; through a pool that was 180 GB for ToxCast.
    from pyg_molblend.datasets.utils import _dumps

    table = torch.arange(1000 * 617, dtype=torch.float).view(1000, 617)
    data_list = [from_smiles(s) for s in SMILES * 4]
    for row, data in enumerate(data_list):
        data.y = table[row].view(1, -1)
    whole = len(pickle.dumps(data_list[3]))
    sent = len(_dumps(data_list[3]))
    assert whole > table.numel() * 4  # the table travels with a plain pickle
    assert sent < 20_000  # piperidine: 6 atoms, 12 directed bonds, 617 targets
    assert data_list[3].y.untyped_storage().nbytes() == table.numel() * 4  # input untouched
    out = apply_transform(data_list, AddShortestPath(), num_workers=2)
    for row, data in enumerate(out):
        assert torch.equal(data.y, table[row].view(1, -1))
        assert data.y.untyped_storage().nbytes() == 617 * 4
        assert torch.equal(data.spd, AddShortestPath()(data_list[row].clone()).spd)


class Marked(Data):
    """A Data subclass (pickled by reference, so at module level)."""


def test_graphs_travel_between_processes_unchanged():
    # Graphs go to and from workers as numpy arrays (_PackedGraph), alone or in a tuple;
    # every field comes back with its dtype, values and order, each tensor with just
    # its own elements; what numpy cannot hold (bfloat16) and Data subclasses travel as
    # they are, views copied.
    from pyg_molblend.datasets.utils import _dumps, _loads

    table = torch.arange(40, dtype=torch.bfloat16).view(10, 4)
    data = AddShortestPath()(from_smiles("CC(=O)Nc1ccc(O)cc1"))
    data.y = torch.arange(600.0).view(100, 6)[7:8]  # a view of a larger storage
    data.has_pos = torch.tensor([True, False])
    data.weight = table[3:4]
    data.count = 3
    status, back = _loads(_dumps(("ok", data)))
    # (Data.keys() is a set's order; to_dict() keeps the store's)
    assert status == "ok" and type(back) is Data and list(back.to_dict()) == list(data.to_dict())
    for key in data.keys():
        value, other = data[key], back[key]
        if isinstance(value, torch.Tensor):
            assert other.dtype == value.dtype and torch.equal(other, value), key
            assert other.untyped_storage().nbytes() == value.numel() * value.element_size()
        else:
            assert other == value, key
    marked = _loads(_dumps(Marked(y=table[5:6])))
    assert type(marked) is Marked and torch.equal(marked.y, table[5:6])
    assert marked.y.untyped_storage().nbytes() == 4 * 2
    assert _loads(_dumps(["CCO", 2])) == ["CCO", 2]


def test_apply_transform_workers_hold_no_file_descriptor_per_tensor():
    # Tensors returned through a pool as they are keep one descriptor each in the parent
    # (torch's shared-memory reduction): 400 graphs x 4 tensors overflow a limit of 256.
    import resource

    data_list = [from_smiles(s) for s in SMILES * 80]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    try:
        out = apply_transform(data_list, AddShortestPath(), num_workers=2)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(out) == 400
    for a, b in zip(out[:5], [AddShortestPath()(d.clone()) for d in data_list[:5]], strict=True):
        assert torch.equal(a.spd, b.spd) and torch.equal(a.path_edge, b.path_edge)


def test_dataset_pre_transform_with_workers(tmp_path):
    path = _write(
        tmp_path / "mols.csv", "smiles,y\n" + "".join(f"{s},{k}\n" for k, s in enumerate(SMILES))
    )
    dataset = CSVDataset(
        str(tmp_path / "ds"),
        str(path),
        "smiles",
        ["y"],
        "regression",
        pre_transform=AddConformer(seed=0),
        pre_filter=lambda data: data.num_nodes > 3,
        num_workers=2,
    )
    assert dataset.smiles == SMILES[1:]  # CCO has 3 atoms
    for data in dataset:
        assert data.pos.shape == (data.num_nodes, 3) and bool(data.has_pos.all())
        expected = AddConformer(seed=0)(from_smiles(data.smiles)).pos
        assert torch.equal(data.pos, expected)


def test_dataset_featurizes_in_workers_as_in_this_process(tmp_path):
    # With num_workers the SMILES are featurized in worker processes too: the same
    # graphs, labels and source rows, and the same invalid, too large and unlabelled rows
    # with the same counted warnings (lines as a text editor shows them).
    rows = ["CCO,1", "C1CC,2", "CCCCCCCCCCCC,3", "c1ccccc1O,", "CC(=O)O,5", "OCC,6"]
    path = _write(tmp_path / "mols.csv", "smiles,y\n" + "\n".join(rows) + "\n")
    made = {}
    for workers in (0, 1):
        with pytest.warns(UserWarning) as caught:
            made[workers] = CSVDataset(
                str(tmp_path / f"ds{workers}"),
                str(path),
                "smiles",
                ["y"],
                "regression",
                skip_invalid=True,
                max_atoms=10,
                num_workers=workers,
            )
        messages = (str(w.message).replace(f"ds{workers}", "") for w in caught)
        made[workers, "warnings"] = sorted(messages)
    serial, parallel = made[0], made[1]
    assert serial.smiles == parallel.smiles == ["CCO", "CC(=O)O", "OCC"]
    assert serial.source_rows == parallel.source_rows == [0, 4, 5]
    for a, b in zip(serial, parallel, strict=True):
        for key in ("x", "edge_index", "edge_attr", "y"):
            assert torch.equal(a[key], b[key]), key
    for key in ("skipped", "too_large", "unlabeled"):
        assert getattr(serial, key) == getattr(parallel, key), key
    assert serial.skipped == [(1, "C1CC")] and serial.too_large == [(2, "CCCCCCCCCCCC")]
    assert serial.unlabeled == [(3, "c1ccccc1O")]
    assert made[0, "warnings"] == made[1, "warnings"] and len(made[0, "warnings"]) == 3
    assert any("line 3" in w and "'C1CC'" in w for w in made[0, "warnings"])


# ------------------------------------------------------------------------------------ QM9


def _qm9_table() -> pd.DataFrame:
    return pd.read_csv(DATA / "qm9_b3lyp_part01_head200.csv.gz")


@pytest.fixture(scope="module")
def qm9pack(tmp_path_factory) -> QM9:
    root = tmp_path_factory.mktemp("qm9pack")
    (root / "raw").mkdir()
    shutil.copy(DATA / "qm9_b3lyp_part01_head200.csv.gz", root / "raw")
    return QM9(str(root), "qm9pack")


def test_qm9pack(qm9pack):
    table = _qm9_table()
    assert len(qm9pack) == 200 and qm9pack.skipped == []
    assert qm9pack.num_tasks == 15 and qm9pack.task_type == "regression"
    for k in range(len(qm9pack)):
        data = qm9pack[k]
        elements = ast.literal_eval(table["Elements"][k])
        assert data.idx.item() == table["Index"][k]
        assert data.num_nodes == table["N_atoms"][k] - elements.count("H")
        assert data.x.shape == (data.num_nodes, 9) and data.x.dtype == torch.long
        assert data.edge_attr.shape[1] == 3 and bool(data.has_pos.all())
        # Nodes keep QM9's atom order, hydrogens left out.
        xyz = torch.tensor(ast.literal_eval(table["XYZ_Ang"][k]), dtype=torch.float)
        heavy = torch.tensor([element != "H" for element in elements])
        assert torch.allclose(data.pos, xyz[heavy])
    homo = HARTREE_TO_EV * torch.tensor(table["HOMO_au"].to_numpy())
    gap = HARTREE_TO_EV * torch.tensor(table["HOMO_LUMO_gap_au"].to_numpy())
    y = torch.cat([d.y for d in qm9pack])
    names = list(qm9pack.target_names)
    assert names[:5] == ["mu", "alpha", "homo", "lumo", "gap"]
    assert torch.allclose(y[:, names.index("homo")], homo.float())
    assert torch.allclose(y[:, names.index("gap")], gap.float())
    assert y[0, names.index("homo")].item() == pytest.approx(-0.3877 * 27.211386246, rel=1e-6)


def test_qm9pack_bond_lengths(qm9pack):
    single_cc, bonded = [], []
    for data in qm9pack:
        i, j = data.edge_index
        dist = (data.pos[i] - data.pos[j]).norm(dim=-1)
        bonded.append(dist)
        carbon = (data.x[i, 0] == 5) & (data.x[j, 0] == 5)  # OGB atomic number - 1
        single_cc.append(dist[carbon & (data.edge_attr[:, 0] == 0)])
    bonded_all, single_cc_all = torch.cat(bonded), torch.cat(single_cc)
    assert bonded_all.min() > 1.1 and bonded_all.max() < 1.65
    assert single_cc_all.numel() > 100
    assert 1.48 < single_cc_all.mean().item() < 1.56


def test_qm9_sdf_matches_qm9pack(tmp_path, qm9pack):
    (tmp_path / "raw").mkdir()
    shutil.copy(DATA / "qm9_mini.sdf", tmp_path / "raw" / "gdb9.sdf")
    shutil.copy(DATA / "qm9_mini.sdf.csv", tmp_path / "raw" / "gdb9.sdf.csv")
    sdf = QM9(str(tmp_path), "sdf")
    assert len(sdf) == 21 and sdf.skipped == []
    for a, b in zip(sdf, qm9pack[:21], strict=True):
        assert a.idx.item() == b.idx.item() and a.smiles == b.smiles
        assert torch.equal(a.x, b.x) and _edge_set(a) == _edge_set(b)
        assert torch.allclose(a.pos, b.pos, atol=1e-3)
        assert torch.allclose(a.y, b.y, rtol=1e-5)

    # An uncharacterized.txt in raw/ removes the listed QM9 indices.
    _write(tmp_path / "raw" / "uncharacterized.txt", "header\n  3  x\n  5  y\n")
    excluded = QM9(str(tmp_path), "sdf", force_reload=True)
    assert [d.idx.item() for d in excluded] == [i for i in range(1, 22) if i not in (3, 5)]


def test_qm9_with_hydrogen_and_max_molecules(tmp_path):
    (tmp_path / "raw").mkdir()
    shutil.copy(DATA / "qm9_b3lyp_part01_head200.csv.gz", tmp_path / "raw")
    dataset = QM9(str(tmp_path), with_hydrogen=True, max_molecules=30)
    table = _qm9_table()
    assert len(dataset) == 30
    for k, data in enumerate(dataset):
        assert data.num_nodes == table["N_atoms"][k]
        xyz = torch.tensor(ast.literal_eval(table["XYZ_Ang"][k]), dtype=torch.float)
        assert torch.allclose(data.pos, xyz)
    methane = dataset[0]
    i, j = methane.edge_index
    assert (methane.pos[i] - methane.pos[j]).norm(dim=-1).tolist() == pytest.approx(
        [1.09] * 8, abs=0.01
    )


def test_qm9_skips_unperceivable_geometry(tmp_path):
    table = _qm9_table().head(3).copy()
    table.loc[1, "Elements"] = "['C','H']"  # a CH radical: no neutral closed-shell bonding
    table.loc[1, "XYZ_Ang"] = "[[0.0,0.0,0.0],[1.1,0.0,0.0]]"
    (tmp_path / "raw").mkdir()
    table.to_csv(tmp_path / "raw" / "qm9_part1.csv", index=False)
    with pytest.warns(UserWarning, match="Skipped 1 QM9 molecules"):
        dataset = QM9(str(tmp_path), "qm9pack")
    assert [d.idx.item() for d in dataset] == [1, 3]
    assert dataset.skipped == [(2, "bond perception from the coordinates failed")]


def test_qm9_errors(tmp_path):
    with pytest.raises(ValueError, match="'xyz'"):
        QM9(str(tmp_path), "xyz")
    with pytest.raises(ValueError, match="max_molecules"):
        QM9(str(tmp_path), max_molecules=0)
    with pytest.raises(FileNotFoundError, match="qm9pack"):
        QM9(str(tmp_path), "qm9pack")


# ------------------------------------------------------------------------------------ OGB

OGB_SMILES = [
    "CCO", "CCN", "CCCl", "c1ccccc1", "Cc1ccccc1", "Oc1ccccc1", "c1ccncc1", "Cc1ccncc1",
    "C1CCCCC1", "OC1CCCCC1", "CC(=O)O", "CC(=O)Nc1ccc(O)cc1", "c1ccc2ccccc2c1",
    "C1CCNCC1", "CC1CCNCC1", "O=C1CCCN1", "c1ccoc1", "Cc1ccoc1", "C1CC1", "CC1CC1",
]
OGB_LABELS = [0, 1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0]


def _write_gz(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, header=False, index=False, compression="gzip")


def _tiny_ogb_root(root: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An ogbg-molhiv directory in OGB's raw format with 20 molecules."""
    from ogb.utils import smiles2graph

    directory = root / "ogbg_molhiv"
    edges, node_feat, edge_feat, num_nodes, num_edges = [], [], [], [], []
    for smiles in OGB_SMILES:
        graph = smiles2graph(smiles)
        # OGB stores every bond once; master.csv's add_inverse_edge restores the reverse.
        edges += graph["edge_index"][:, ::2].T.tolist()
        edge_feat += graph["edge_feat"][::2].tolist()
        node_feat += graph["node_feat"].tolist()
        num_nodes.append(graph["num_nodes"])
        num_edges.append(graph["edge_index"].shape[1] // 2)
    raw = directory / "raw"
    _write_gz(raw / "edge.csv.gz", edges)
    _write_gz(raw / "node-feat.csv.gz", node_feat)
    _write_gz(raw / "edge-feat.csv.gz", edge_feat)
    _write_gz(raw / "num-node-list.csv.gz", num_nodes)
    _write_gz(raw / "num-edge-list.csv.gz", num_edges)
    _write_gz(raw / "graph-label.csv.gz", OGB_LABELS)
    split = scaffold_split(OGB_SMILES)
    for name, part in zip(("train", "valid", "test"), split, strict=True):
        _write_gz(directory / "split" / "scaffold" / f"{name}.csv.gz", part.tolist())
    (directory / "RELEASE_v1.txt").write_text("tiny test copy\n")
    return split


@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable:UserWarning")
def test_load_ogb_tiny_molhiv(tmp_path):
    split = _tiny_ogb_root(tmp_path)
    dataset = load_ogb("ogbg-molhiv", str(tmp_path))
    assert len(dataset) == 20
    idx = dataset.get_idx_split()
    for name, part in zip(("train", "valid", "test"), split, strict=True):
        assert torch.equal(idx[name], part)
    for k, smiles in enumerate(OGB_SMILES):
        data, reference = dataset[k], from_smiles(smiles)
        assert torch.equal(data.x, reference.x)
        assert _edge_set(data) == _edge_set(reference)
        assert data.y.dtype == torch.float and data.y.tolist() == [[float(OGB_LABELS[k])]]

    # Reloading from OGB's processed file (torch >= 2.6 safe globals) gives float labels too.
    again = load_ogb("ogbg-molhiv", str(tmp_path))
    assert again[3].y.dtype == torch.float

    y_true = torch.tensor(OGB_LABELS, dtype=torch.float).view(-1, 1)
    y_pred = torch.linspace(-1.0, 1.0, 20).view(-1, 1)
    expected = roc_auc_score(OGB_LABELS, y_pred.view(-1).numpy())
    assert evaluate_ogb("ogbg-molhiv", y_true, y_pred) == pytest.approx(expected, abs=1e-12)
    assert evaluate_ogb("ogbg-molhiv", np.array(OGB_LABELS), y_pred.view(-1).numpy()) == (
        pytest.approx(expected, abs=1e-12)
    )
    with pytest.raises(ValueError, match="same shape"):
        evaluate_ogb("ogbg-molhiv", y_true, y_pred[:5])


def test_load_ogb_errors(tmp_path):
    with pytest.raises(ValueError, match="'ogbg-molfoo'"):
        load_ogb("ogbg-molfoo", str(tmp_path))
    (tmp_path / "ogbg_molhiv").mkdir()
    with pytest.raises(FileNotFoundError, match=r"RELEASE_v1\.txt"):
        load_ogb("ogbg-molhiv", str(tmp_path))


# ------------------------------------------------------------------------------------ SDF


def test_sdf_dataset_keeps_record_coordinates(tmp_path):
    from rdkit import Chem

    from pyg_molblend.datasets import SDFDataset

    path = str(DATA / "qm9_mini.sdf")
    dataset = SDFDataset(str(tmp_path / "sdf"), [path], pre_transform=AddShortestPath())
    records = [Chem.RemoveAllHs(m) for m in Chem.SDMolSupplier(path, removeHs=False)]
    assert len(dataset) == len(records) == 21 and dataset.skipped == []
    for data, mol in zip(dataset, records, strict=True):
        assert bool(data.has_pos.all()) and data.spd.numel() == data.num_nodes**2
        expected = torch.tensor(mol.GetConformer().GetPositions(), dtype=torch.float)
        torch.testing.assert_close(data.pos, expected)
        assert data.smiles == Chem.MolToSmiles(mol) and "[H]" not in data.smiles
    assert dataset[5].pos.shape == (dataset[5].num_nodes, 3)

    # a record RDKit cannot read is named, or skipped and counted
    good = Chem.MolToMolBlock(Chem.SDMolSupplier(path)[4])
    broken = tmp_path / "broken.sdf"
    bad = "junk\n  no atoms here\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\nM  END\n"
    broken.write_text(good + "$$$$\n" + bad + "$$$$\n" + good + "$$$$\n")
    with pytest.raises(ValueError, match=r"broken\.sdf, record 1 cannot be read"):
        SDFDataset(str(tmp_path / "b1"), [str(broken)])
    with pytest.warns(UserWarning, match="Skipped 1 molecules .* that RDKit cannot read"):
        skipping = SDFDataset(str(tmp_path / "b2"), [str(broken)], skip_invalid=True)
    assert len(skipping) == 2 and skipping.skipped == [(1, f"{broken}:1")]
    assert len(SDFDataset(str(tmp_path / "b3"), [path], max_molecules=3)) == 3


def test_merge_datasets_keeps_shared_fields_in_order():
    from pyg_molblend.datasets import merge_datasets

    a = [AddShortestPath()(from_smiles(s)) for s in ("CCO", "c1ccccc1")]
    b = [AddConformer(seed=0)(AddShortestPath()(from_smiles("CCN")))]
    keys = ("x", "edge_index", "edge_attr", "smiles", "spd", "path_edge")
    merged = merge_datasets([a, b], keys)
    assert [d.smiles for d in merged] == ["CCO", "c1ccccc1", "CCN"]
    assert set(merged[2].keys()) == {*keys, "featurizer"}  # b's pos and has_pos left out
    torch.testing.assert_close(merged[1].spd, a[1].spd)
    torch.testing.assert_close(merged[1].edge_index, a[1].edge_index)
    with pytest.raises(ValueError, match=r"Graph 0 of dataset 0 .* lacks \['pos'\]"):
        merge_datasets([a, b], (*keys, "pos"))


def test_num_without_pos_counts_missing_conformers_of_a_subset():
    import torch
    from torch_geometric.data import Data, InMemoryDataset

    from pyg_molblend.datasets.utils import num_without_pos

    flags = (True, False, True, False)
    graphs = [Data(x=torch.zeros(2, 1), has_pos=torch.tensor([flag])) for flag in flags]
    dataset = InMemoryDataset()
    dataset.data, dataset.slices = InMemoryDataset.collate(graphs)
    assert num_without_pos(dataset) == 2
    assert num_without_pos(dataset[torch.tensor([1, 2])]) == 1
    assert num_without_pos(dataset[torch.tensor([0, 2])]) == 0
    no_pos = InMemoryDataset()
    no_pos.data, no_pos.slices = InMemoryDataset.collate([Data(x=torch.zeros(1, 1))] * 2)
    assert num_without_pos(no_pos) == 0


def test_transform_workers_do_not_hang_after_the_parent_used_threads(tmp_path):
    """Workers forked after the parent ran a multi-threaded product used to spin forever
    in their first one (AddShortestPath's); run in a child with a deadline."""
    script = tmp_path / "fork.py"
    script.write_text(
        "import torch\n"
        "from pyg_molblend.data import from_smiles\n"
        "from pyg_molblend.datasets.utils import apply_transform\n"
        "from pyg_molblend.transforms import AddShortestPath\n"
        "torch.set_num_threads(2)\n"
        "smiles = ['CC(=O)Oc1ccccc1C(=O)O', 'CCN(CC)CCOC(=O)c1ccc(N)cc1'] * 20\n"
        "graphs = [from_smiles(s) for s in smiles]\n"
        "a = torch.randn(300, 300)\n"
        "(a @ a).sum()  # the OpenMP pool has just run when the workers are forked\n"
        "out = apply_transform(graphs, AddShortestPath(), num_workers=2)\n"
        "assert [g.spd.numel() for g in out] == [g.num_nodes ** 2 for g in graphs]\n"
        "print('done')\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "done"
