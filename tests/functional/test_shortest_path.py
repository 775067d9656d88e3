import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch, Data

from pyg_molblend.constants import NO_EDGE, SPD_UNREACHABLE
from pyg_molblend.data import from_smiles
from pyg_molblend.functional import shortest_path


def _run(data, **kwargs):
    n = data.num_nodes
    spd, path = shortest_path(data.edge_index, torch.tensor([0, n]), **kwargs)
    return spd.view(n, n), path.view(n, n, -1)


def _check_paths(edge_index, spd, path, max_hops):
    """Every listed path is a chain of real bonds from i of length min(spd, max_hops),
    every hop brings it one bond closer to j, and unused hops are NO_EDGE."""
    n = spd.size(0)
    src, dst = edge_index.tolist()
    for i in range(n):
        for j in range(n):
            d = int(spd[i, j])
            hops = path[i, j].tolist()
            length = 0 if d == SPD_UNREACHABLE else min(d, max_hops)
            assert all(e == NO_EDGE for e in hops[length:]), (i, j, hops)
            node = i
            for e in hops[:length]:
                assert e != NO_EDGE and src[e] == node, (i, j, hops)
                assert int(spd[dst[e], j]) == int(spd[node, j]) - 1
                node = dst[e]
            if d <= max_hops:
                assert node == j


def test_ethanol_by_hand():
    # Atoms C0-C1-O2; edges: 0: 0->1, 1: 1->0, 2: 1->2, 3: 2->1.
    spd, path = _run(from_smiles("CCO"))
    assert spd.tolist() == [[0, 1, 2], [1, 0, 1], [2, 1, 0]]
    assert path[0, 2].tolist() == [0, 2, -1, -1, -1]
    assert path[2, 0].tolist() == [3, 1, -1, -1, -1]
    assert path[1, 2].tolist() == [2, -1, -1, -1, -1]
    assert path[1, 1].tolist() == [-1] * 5


def test_results_are_ordinary_tensors_usable_under_autograd():
    # The kernel runs in inference mode; what it returns must not be an inference tensor,
    # which autograd refuses to save (an index of a gather, here) or to modify in place.
    data = Batch.from_data_list([from_smiles("CCO"), from_smiles("c1ccccc1")])
    spd, path = shortest_path(data.edge_index, data.ptr)
    assert not spd.is_inference() and not path.is_inference()
    table = torch.randn(data.edge_index.size(1) + 1, 2, requires_grad=True)
    table[path.clamp(min=-1) + 1].sum().backward()
    assert table.grad is not None
    spd += 1  # in place, outside inference mode


def test_benzene_by_hand():
    data = from_smiles("c1ccccc1")
    spd, path = _run(data)
    expected = torch.tensor([[min(abs(i - j), 6 - abs(i - j)) for j in range(6)] for i in range(6)])
    assert torch.equal(spd, expected)
    # Two shortest paths lead from atom 0 to atom 3; the lowest edge id leaving 0 is taken.
    src, _dst = data.edge_index
    first = int(path[0, 3, 0])
    assert src[first] == 0 and first == min(e for e in range(12) if src[e] == 0)
    assert (path[0, 3, :3] >= 0).all() and (path[0, 3, 3:] == -1).all()
    _check_paths(data.edge_index, spd, path, 5)


def test_salt_is_unreachable_across_fragments():
    spd, path = _run(from_smiles("[Na+].[Cl-]"))
    assert spd.tolist() == [[0, SPD_UNREACHABLE], [SPD_UNREACHABLE, 0]]
    assert (path == NO_EDGE).all()
    spd, _ = _run(from_smiles("CC.O"))
    assert spd.tolist() == [[0, 1, 255], [1, 0, 255], [255, 255, 0]]


def test_single_atom():
    spd, path = _run(from_smiles("C"))
    assert spd.tolist() == [[0]]
    assert path.tolist() == [[[-1] * 5]]


def test_cap_and_hops():
    data = from_smiles("CCCCCCCC")  # a chain of 8 atoms
    spd, path = _run(data, max_distance=3, max_hops=2)
    assert spd[0].tolist() == [0, 1, 2, 3, 3, 3, 3, 3]
    assert path.shape == (8, 8, 2)
    assert (path[0, 7] >= 0).all()
    spd, path = _run(data, max_hops=0)
    assert spd[0, 7] == 7 and path.shape == (8, 8, 0)
    with pytest.raises(ValueError, match="300"):
        _run(data, max_distance=300)
    with pytest.raises(ValueError, match="-1"):
        _run(data, max_hops=-1)


def test_spd_equals_networkx_on_real_molecules(real_smiles):
    assert len(real_smiles) >= 500
    for smiles in real_smiles:
        data = from_smiles(smiles)
        spd, _path = _run(data)
        graph = nx.Graph()
        graph.add_nodes_from(range(data.num_nodes))
        graph.add_edges_from(data.edge_index.t().tolist())
        expected = torch.full_like(spd, SPD_UNREACHABLE)
        for i, lengths in nx.all_pairs_shortest_path_length(graph):
            for j, d in lengths.items():
                expected[i, j] = d
        assert torch.equal(spd, expected), smiles


def test_paths_are_bond_chains_on_real_molecules(real_smiles):
    for smiles in real_smiles[:150]:
        data = from_smiles(smiles)
        spd, path = _run(data)
        _check_paths(data.edge_index, spd, path, 5)


def test_batched_equals_per_molecule(real_smiles):
    # Sizes from 1 to ~100 atoms, so the batched kernel splits into several size buckets.
    datas = [from_smiles(s) for s in real_smiles[:300]] + [from_smiles("C")]
    batch = Batch.from_data_list(datas)
    spd, path = shortest_path(batch.edge_index, batch.ptr)
    edge_offset = 0
    start = 0
    for data in datas:
        n = data.num_nodes
        one_spd, one_path = shortest_path(data.edge_index, torch.tensor([0, n]))
        assert torch.equal(spd[start : start + n * n], one_spd)
        shifted = torch.where(one_path >= 0, one_path + edge_offset, -1)
        assert torch.equal(path[start : start + n * n], shifted)
        start += n * n
        edge_offset += data.edge_index.size(1)
    assert start == spd.numel()


def test_one_graph_routes_agree(real_smiles):
    # A molecule of at most 128 atoms on the CPU takes the numpy steps; larger graphs and
    # batches the torch kernel. Both must give the same outputs, either way round.
    from pyg_molblend.functional.shortest_path import _one_graph_numpy, _shortest_path

    ring = from_smiles("C1" + "C" * 198 + "C1")  # 200 atoms: the torch kernel's sparse route
    spd, path = _run(ring)
    n = ring.num_nodes
    expected = [[min(abs(i - j), n - abs(i - j)) for j in range(n)] for i in range(n)]
    assert spd.tolist() == expected
    _check_paths(ring.edge_index, spd, path, 5)
    for data in [ring] + [from_smiles(s) for s in real_smiles[:60]]:
        n = data.num_nodes
        for max_distance, max_hops in ((254, 5), (3, 2), (254, 0)):
            ptr = torch.tensor([0, n])
            spd, path = _shortest_path(data.edge_index, ptr, max_distance, max_hops)
            np_spd, np_path = _one_graph_numpy(
                data.edge_index.numpy(), n, max_distance, max_hops, np.int64, np.int64
            )
            assert torch.equal(spd, torch.from_numpy(np_spd))
            assert torch.equal(path, torch.from_numpy(np_path))


@st.composite
def random_graphs(draw):
    n = draw(st.integers(1, 14))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen = (
        draw(st.lists(st.sampled_from(pairs), unique=True, max_size=len(pairs))) if pairs else []
    )
    edges = [e for i, j in chosen for e in ((i, j), (j, i))]
    edge_index = torch.tensor(edges, dtype=torch.long).view(-1, 2).t()
    return Data(edge_index=edge_index, num_nodes=n)


@settings(max_examples=60, deadline=None)
@given(st.lists(random_graphs(), min_size=1, max_size=4), st.integers(0, 6))
def test_random_graphs_against_networkx(graphs, max_hops):
    batch = Batch.from_data_list(graphs)
    spd_all, path_all = shortest_path(batch.edge_index, batch.ptr, max_hops=max_hops)
    start = 0
    edge_offset = 0
    for data in graphs:
        n = data.num_nodes
        spd = spd_all[start : start + n * n].view(n, n)
        path = path_all[start : start + n * n].view(n, n, max_hops)
        graph = nx.Graph()
        graph.add_nodes_from(range(n))
        graph.add_edges_from(data.edge_index.t().tolist())
        lengths = dict(nx.all_pairs_shortest_path_length(graph))
        for i in range(n):
            for j in range(n):
                assert int(spd[i, j]) == lengths[i].get(j, SPD_UNREACHABLE)
        local = torch.where(path >= 0, path - edge_offset, -1)
        _check_paths(data.edge_index, spd, local, max_hops)
        start += n * n
        edge_offset += data.edge_index.size(1)


# sha256 (first 16 hex digits) of the int64 bytes of spd then path, molecule after molecule
# of tests/assets/molecules.csv: any faster kernel must give bit-identical outputs.
_FROZEN = {
    "default": "963f2f4967d4f859",
    "hops0": "d8cfcd449ec3ca07",
    "cap3h2": "cd0ba51bab3f5d42",
    "h7": "dd5b109e710744ca",
}


def test_outputs_frozen_on_real_molecules(real_smiles):
    import hashlib

    datas = [from_smiles(s) for s in real_smiles]
    configs = {
        "default": {},
        "hops0": dict(max_hops=0),
        "cap3h2": dict(max_distance=3, max_hops=2),
        "h7": dict(max_hops=7),
    }
    for name, kwargs in configs.items():
        digest = hashlib.sha256()
        for data in datas:
            spd, path = shortest_path(data.edge_index, torch.tensor([0, data.num_nodes]), **kwargs)
            assert spd.dtype == path.dtype == torch.long
            digest.update(spd.numpy().tobytes())
            digest.update(path.numpy().tobytes())
        assert digest.hexdigest()[:16] == _FROZEN[name], name
    batch = Batch.from_data_list(datas)
    spd, path = shortest_path(batch.edge_index, batch.ptr)
    digest = hashlib.sha256(spd.numpy().tobytes())
    digest.update(path.numpy().tobytes())
    assert digest.hexdigest()[:16] == "249935ea31e80294"


def test_transform_equals_kernel(real_smiles):
    from pyg_molblend.transforms import AddShortestPath

    for smiles in real_smiles[:100]:
        data = from_smiles(smiles)
        spd, path = shortest_path(data.edge_index, torch.tensor([0, data.num_nodes]))
        out = AddShortestPath()(data)
        assert torch.equal(out.spd, spd.to(torch.uint8))
        assert torch.equal(out.path_edge, path.to(torch.int16))

