import pickle
import warnings

import numpy as np
import pytest
import torch
import torch_geometric.transforms as T
from torch_geometric.data import InMemoryDataset
from torch_geometric.loader import DataLoader

from pyg_molblend.data import from_smiles
from pyg_molblend.transforms import (
    AddConformer,
    AddPairwiseDistance,
    AddShortestPath,
    ConformerError,
    SampleConformer,
)


def test_add_shortest_path_storage():
    data = from_smiles("CCO")
    out = AddShortestPath()(data)
    assert out.spd.dtype == torch.uint8 and out.spd.shape == (9,)
    assert out.path_edge.dtype == torch.int16 and out.path_edge.shape == (9, 5)
    assert out.spd.tolist() == [0, 1, 2, 1, 0, 1, 2, 1, 0]
    assert out.path_edge[2].tolist() == [0, 2, -1, -1, -1]
    # Compact: 1 byte of SPD + 2 bytes per path hop per ordered pair.
    per_pair = (
        out.spd.element_size() * out.spd.numel()
        + out.path_edge.element_size() * out.path_edge.numel()
    ) / 9
    assert per_pair == 11
    assert "spd" not in data  # the caller's object is untouched
    assert repr(AddShortestPath(max_distance=20, max_hops=3)) == (
        "AddShortestPath(max_distance=20, max_hops=3)"
    )


def test_add_shortest_path_bad_arguments():
    with pytest.raises(ValueError, match="255"):
        AddShortestPath(max_distance=255)
    with pytest.raises(ValueError, match="-2"):
        AddShortestPath(max_hops=-2)


def test_transforms_pickle_and_compose():
    transform = T.Compose(
        [AddConformer(seed=3), AddShortestPath(max_hops=3), AddPairwiseDistance()]
    )
    clone = pickle.loads(pickle.dumps(transform))
    a = transform(from_smiles("CC(=O)O"))
    b = clone(from_smiles("CC(=O)O"))
    assert torch.equal(a.pos, b.pos) and torch.equal(a.spd, b.spd) and torch.equal(a.dist, b.dist)
    assert a.path_edge.shape == (16, 3)


def _random_rotation(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed)))
    return q


def test_pairwise_distance_matches_numpy_and_is_invariant():
    data = AddConformer(seed=0)(from_smiles("c1ccccc1CCN"))
    dist = AddPairwiseDistance()(data).dist.view(data.num_nodes, data.num_nodes)
    pos = data.pos.double().numpy()
    ref = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
    assert np.allclose(dist.numpy(), ref, atol=1e-5)
    assert torch.all(dist.diagonal() == 0)

    moved = data.clone()
    moved.pos = data.pos @ _random_rotation(1).T + torch.tensor([3.0, -1.0, 7.5])
    dist_moved = AddPairwiseDistance()(moved).dist.view_as(dist)
    assert torch.allclose(dist, dist_moved, atol=1e-4)

    perm = torch.randperm(data.num_nodes)
    permuted = data.clone()
    permuted.pos = data.pos[perm]
    dist_perm = AddPairwiseDistance()(permuted).dist.view_as(dist)
    assert torch.equal(dist_perm, dist[perm][:, perm])


def test_pairwise_distance_needs_pos():
    with pytest.raises(ValueError, match="CCO"):
        AddPairwiseDistance()(from_smiles("CCO"))


def test_conformer_seeded_and_physical():
    a = AddConformer(seed=7)(from_smiles("CCO"))
    b = AddConformer(seed=7)(from_smiles("CCO"))
    c = AddConformer(seed=8)(from_smiles("CCO"))
    assert a.has_pos.tolist() == [True] and a.pos.shape == (3, 3)
    assert torch.equal(a.pos, b.pos)
    assert not torch.equal(a.pos, c.pos)
    bond = (a.pos[0] - a.pos[1]).norm()
    assert 1.4 < bond < 1.65  # a C-C single bond in Angstrom
    with_h = AddConformer(seed=7, optimize=True)(from_smiles("CCO", with_hydrogen=True))
    assert with_h.pos.shape == (9, 3)
    ch = (with_h.pos[0] - with_h.pos[3]).norm()  # first H sits on C0
    assert 1.0 < ch < 1.2


def test_several_conformers_first_is_the_single_one_others_differ():
    smiles = "CCCOc1ccccc1"
    single = AddConformer(seed=3)(from_smiles(smiles))
    several = AddConformer(seed=3, num_conformers=4)(from_smiles(smiles))
    assert several.pos_conformers.shape == (10, 4, 3)
    assert torch.equal(several.pos, single.pos)  # evaluation sees the K = 1 geometry
    assert torch.equal(several.pos_conformers[:, 0], single.pos)
    conformers = several.pos_conformers.transpose(0, 1)
    for k in range(4):  # real geometries: every C-C / C-O bond of the chain 1.3-1.6 A
        for i, j in ((0, 1), (1, 2), (2, 3)):
            assert 1.3 < (conformers[k, i] - conformers[k, j]).norm() < 1.6
        for other in range(k):  # each conformer its own (RDKit seeds 0 and 1 coincide)
            assert not torch.allclose(conformers[k], conformers[other], atol=1e-3)
    # internal distances, not just a rigid motion, differ between conformers
    dist = torch.cdist(conformers, conformers)
    assert (dist[1:] - dist[0]).abs().amax() > 0.5
    assert "num_conformers=4" in repr(AddConformer(num_conformers=4))
    assert "num_conformers" not in repr(AddConformer())  # K = 1 caches keep their keys
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_conformers must be a positive integer"):
            AddConformer(num_conformers=bad)


def test_sample_conformer_draws_each_conformer_and_keeps_data():
    data = AddConformer(seed=0, num_conformers=3)(from_smiles("CCCO"))
    torch.manual_seed(0)
    drawn = set()
    for _ in range(60):
        out = SampleConformer()(data)
        matches = [k for k in range(3) if torch.equal(out.pos, data.pos_conformers[:, k])]
        assert len(matches) == 1
        drawn.add(matches[0])
    assert drawn == {0, 1, 2}
    assert torch.equal(data.pos, data.pos_conformers[:, 0])  # the input is not modified
    plain = AddConformer(seed=0)(from_smiles("CCO"))  # one conformer: unchanged
    assert torch.equal(SampleConformer()(plain).pos, plain.pos)
    # a batch of molecules with K conformers collates: [sum N, K, 3]
    loader = DataLoader([data, AddConformer(num_conformers=3)(from_smiles("CC"))], batch_size=2)
    assert next(iter(loader)).pos_conformers.shape == (6, 3, 3)


class _NeverEmbeds(AddConformer):
    def embed(self, smiles, num_nodes):
        return None


def test_conformer_failure_is_flagged_not_zero():
    transform = _NeverEmbeds()
    with pytest.warns(UserWarning, match="CCO"):
        out = transform(from_smiles("CCO"))
    assert out.has_pos.tolist() == [False]
    assert torch.isnan(out.pos).all()
    assert transform.num_failures == 1
    several = _NeverEmbeds(num_conformers=3)
    with pytest.warns(UserWarning, match="CCO"):
        out = several(from_smiles("CCO"))
    assert out.pos_conformers.shape == (3, 3, 3) and torch.isnan(out.pos_conformers).all()
    with pytest.raises(ConformerError, match="CCO"):
        _NeverEmbeds(on_failure="raise")(from_smiles("CCO"))
    with pytest.raises(ValueError, match="on_failure"):
        AddConformer(on_failure="ignore")


def test_conformer_keeps_real_geometry_and_checks_atom_count():
    data = AddConformer(seed=1)(from_smiles("CCO"))
    data.pos = data.pos + 100.0
    assert torch.equal(AddConformer(seed=2)(data).pos, data.pos)
    assert not torch.equal(AddConformer(seed=2, overwrite=True)(data).pos, data.pos)
    bad = from_smiles("CCO")
    bad.smiles = "CCCC"
    with pytest.raises(ValueError, match="CCCC"):
        AddConformer()(bad)


class _Molecules(InMemoryDataset):
    def __init__(self, root, smiles, pre_transform=None):
        self.smiles = smiles
        super().__init__(root, pre_transform=pre_transform)
        self.load(self.processed_paths[0])

    @property
    def processed_file_names(self):
        return ["data.pt"]

    def process(self):
        data_list = [self.pre_transform(from_smiles(s)) for s in self.smiles]
        self.save(data_list, self.processed_paths[0])


def test_pre_transform_of_in_memory_dataset_with_save_load(tmp_path, real_smiles):
    smiles = real_smiles[:40]
    pre = T.Compose([AddShortestPath(), AddConformer(seed=0), AddPairwiseDistance()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = _Molecules(str(tmp_path), smiles, pre_transform=pre)
    again = _Molecules(str(tmp_path), smiles, pre_transform=pre)  # loaded from disk
    for i in range(len(smiles)):
        fresh = pre(from_smiles(smiles[i]))
        for key in ("spd", "path_edge", "x", "edge_index"):
            assert torch.equal(again[i][key], fresh[key]), key
        assert again[i].spd.dtype == torch.uint8
        assert torch.equal(first[i].spd, again[i].spd)
    batch = next(iter(DataLoader(again, batch_size=8)))
    assert batch.spd.numel() == sum(int(n) ** 2 for n in batch.ptr.diff())
