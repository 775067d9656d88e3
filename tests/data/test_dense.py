import pytest
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from pyg_molblend.constants import NO_EDGE, SPD_PAD, SPD_UNREACHABLE
from pyg_molblend.data import DenseMolBatch, from_smiles, to_dense
from pyg_molblend.transforms import AddConformer, AddPairwiseDistance, AddShortestPath


def test_hand_computed_dense_batch():
    batch = Batch.from_data_list([from_smiles("CCO"), from_smiles("[Na+].[Cl-]")])
    dense = to_dense(batch)
    assert isinstance(dense, DenseMolBatch)
    assert dense.x.shape == (2, 3, 9) and dense.mask.tolist() == [[True] * 3, [True, True, False]]
    assert dense.degree.tolist() == [[1, 2, 1], [0, 0, 0]]
    assert dense.spd[0].tolist() == [[0, 1, 2], [1, 0, 1], [2, 1, 0]]
    u, p = SPD_UNREACHABLE, SPD_PAD
    assert dense.spd[1].tolist() == [[0, u, p], [u, 0, p], [p, p, p]]
    assert dense.path_edge.shape == (2, 3, 3, 5)
    assert dense.path_edge[0, 0, 2].tolist() == [0, 2, -1, -1, -1]
    assert (dense.path_edge[1] == NO_EDGE).all()
    assert dense.edge_attr.shape == (4, 3)
    assert dense.pos is None and dense.dist is None and dense.has_pos.tolist() == [False, False]


def _datasets(smiles):
    raw = [from_smiles(s) for s in smiles]
    pre = T.Compose([AddShortestPath(), AddPairwiseDistance()])
    conf = AddConformer(seed=0)
    with_pos = [conf(d) for d in raw]
    return with_pos, [pre(d) for d in with_pos]


def test_on_the_fly_equals_precomputed(real_smiles):
    smiles = [*real_smiles[:64], "C", "[Na+].[Cl-]"]
    plain, stored = _datasets(smiles)
    for batch_size in (1, 7, 64):
        loader_plain = DataLoader(plain, batch_size=batch_size)
        loader_stored = DataLoader(stored, batch_size=batch_size)
        for a, b in zip(loader_plain, loader_stored, strict=False):
            fly, pre = to_dense(a), to_dense(b)
            for key in ("x", "mask", "degree", "spd", "path_edge", "has_pos", "pos", "dist"):
                assert torch.equal(getattr(fly, key), getattr(pre, key)), (batch_size, key)


def test_path_edges_point_at_batch_edge_attr():
    batch = Batch.from_data_list([from_smiles("CCO"), from_smiles("C=CC#N")])
    dense = to_dense(batch)
    # Molecule 1: C0=C1-C2#N3; the path 0 -> 3 crosses a double, a single, a triple bond.
    hops = dense.path_edge[1, 0, 3]
    types = dense.edge_attr[hops[:3], 0].tolist()
    assert types == [1, 0, 2] and hops[3:].tolist() == [-1, -1]
    assert int(hops[0]) >= 4  # ids are offset past the 4 directed edges of ethanol


def test_max_distance_and_hops_in_to_dense():
    stored = AddShortestPath(max_hops=2)(from_smiles("CCCCCC"))
    with pytest.raises(ValueError, match="2 hops"):
        to_dense(stored, max_hops=3)
    capped = to_dense(stored, max_distance=2, max_hops=2)
    assert capped.spd[0, 0].tolist() == [0, 1, 2, 2, 2, 2]
    fly = to_dense(from_smiles("CCCCCC"), max_distance=2, max_hops=2)
    assert torch.equal(fly.spd, capped.spd) and torch.equal(fly.path_edge, capped.path_edge)


def test_failed_conformer_never_leaks_nan():
    good = AddConformer(seed=0)(from_smiles("CCO"))
    bad = from_smiles("CCN")
    bad.pos = torch.full((3, 3), float("nan"))
    bad.has_pos = torch.tensor([False])
    dense = to_dense(Batch.from_data_list([good, AddPairwiseDistance()(bad)]))
    assert dense.has_pos.tolist() == [True, False]
    assert torch.isfinite(dense.pos).all() and torch.isfinite(dense.dist).all()
    assert (dense.pos[1] == 0).all() and (dense.dist[1] == 0).all()
    assert dense.pair_has_pos[1].sum() == 0 and dense.pair_has_pos[0].sum() == 9


def test_non_finite_flagged_geometry_is_an_error():
    data = AddConformer(seed=0)(from_smiles("CCO"))
    data.pos[1, 0] = float("inf")
    with pytest.raises(ValueError, match="CCO"):
        to_dense(Batch.from_data_list([data]))


def test_bad_features_are_rejected():
    data = from_smiles("CCO")
    data.x = data.x.float()
    with pytest.raises(ValueError, match="OGB atom features"):
        to_dense(data)


def test_to_device_roundtrip():
    dense = to_dense(AddConformer()(from_smiles("CCO")))
    moved = dense.to("cpu")
    assert torch.equal(moved.dist, dense.dist) and moved.batch_size == 1
    assert moved.max_num_nodes == 3


def test_dense_batch_carries_the_sparse_graph(real_smiles):
    batch = Batch.from_data_list([from_smiles(s) for s in real_smiles[:6]])
    dense = to_dense(batch)
    # x[mask], edge_index, edge_attr and batch are the sparse batch, for message passing.
    assert torch.equal(dense.x[dense.mask], batch.x)
    assert torch.equal(dense.edge_index, batch.edge_index)
    assert torch.equal(dense.batch, batch.batch) and dense.edge_attr is batch.edge_attr
    # And they agree with the pair tensors: each bond joins a pair at distance 1, whose
    # first path bond is that very bond.
    src, dst = dense.edge_index
    graph = dense.batch[src]
    row, col = src - batch.ptr[graph], dst - batch.ptr[graph]
    assert (dense.spd[graph, row, col] == 1).all()
    assert torch.equal(dense.path_edge[graph, row, col, 0], torch.arange(src.numel()))
    moved = dense.to("cpu")
    assert torch.equal(moved.edge_index, batch.edge_index)
