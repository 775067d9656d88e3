"""SizeBucketBatchSampler: every molecule once per epoch, little padding, seeded, sharded
without overlap, usable with the stock PyG DataLoader."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.loader import DataLoader

from pyg_molblend.data import SizeBucketBatchSampler, from_smiles, num_nodes_of


@pytest.fixture(scope="module")
def graphs(real_smiles):
    return [from_smiles(s) for s in real_smiles[:300]]


def _padded_pair_fraction(sizes: torch.Tensor, batches) -> float:
    real = sum(int((sizes[b] ** 2).sum()) for b in batches)
    padded = sum(len(b) * int(sizes[b].max()) ** 2 for b in batches)
    return real / padded


def test_num_nodes_of_reads_collated_storage(graphs):
    from torch_geometric.data import InMemoryDataset

    class Stored(InMemoryDataset):
        def __init__(self) -> None:
            super().__init__()
            self.data, self.slices = self.collate(graphs)

    stored = Stored()
    expected = torch.tensor([g.num_nodes for g in graphs])
    assert torch.equal(num_nodes_of(stored), expected)
    index = torch.tensor([5, 0, 299, 17])
    assert torch.equal(num_nodes_of(stored[index]), expected[index])  # a subset view
    assert torch.equal(num_nodes_of(graphs), expected)  # a plain list


def test_every_molecule_once_and_batches_full(graphs):
    sampler = SizeBucketBatchSampler(graphs, batch_size=32, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        flat = sorted(i for b in batches for i in b)
        assert flat == list(range(len(graphs)))
        assert [len(b) for b in batches].count(32) == len(graphs) // 32
        assert len(batches) == len(sampler) == 10  # 300 = 9 * 32 + 12
    dropped = SizeBucketBatchSampler(graphs, batch_size=32, drop_last=True)
    assert len(list(dropped)) == len(dropped) == 9
    assert all(len(b) == 32 for b in dropped)


def test_padding_is_small_compared_with_random_batches(graphs):
    sizes = torch.tensor([g.num_nodes for g in graphs])
    sampler = SizeBucketBatchSampler(graphs, batch_size=32, seed=0)
    bucketed = _padded_pair_fraction(sizes, list(sampler))
    random = _padded_pair_fraction(sizes, torch.randperm(len(graphs)).split(32))
    # 300 BBBP molecules of 2 to 85 atoms: 0.72 against 0.21 (torch seed 0). Ten batches
    # only, so the last one spans 40-odd atoms; a training set of 1,600 gives 0.93.
    assert bucketed > 0.7 and random < 0.3
    pooled = SizeBucketBatchSampler(graphs, batch_size=32, seed=0, pool=2)
    assert random < _padded_pair_fraction(sizes, list(pooled)) < bucketed


def test_jitter_mixes_neighbouring_sizes(graphs):
    sizes = torch.tensor([g.num_nodes for g in graphs])
    sorted_ = SizeBucketBatchSampler(graphs, batch_size=32, seed=0)
    jittered = SizeBucketBatchSampler(graphs, batch_size=32, seed=0, jitter=0.3)
    random = _padded_pair_fraction(sizes, torch.randperm(len(graphs)).split(32))
    fractions = []
    for epoch in range(3):
        jittered.set_epoch(epoch)
        batches = list(jittered)
        assert sorted(i for b in batches for i in b) == list(range(len(graphs)))
        fractions.append(_padded_pair_fraction(sizes, batches))
    assert random < min(fractions) and max(fractions) < _padded_pair_fraction(sizes, list(sorted_))

    # the groups change more from epoch to epoch than with the plain sort
    def groups(sampler, epoch):
        sampler.set_epoch(epoch)
        return {tuple(sorted(b)) for b in sampler}

    assert len(groups(jittered, 0) & groups(jittered, 1)) <= len(
        groups(sorted_, 0) & groups(sorted_, 1)
    )


def test_seeded_and_stochastic(graphs):
    a = SizeBucketBatchSampler(graphs, batch_size=16, seed=1)
    b = SizeBucketBatchSampler(graphs, batch_size=16, seed=1)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    epoch_4 = list(a)
    a.set_epoch(5)
    assert list(a) != epoch_4  # other batch order
    assert {tuple(sorted(x)) for x in a} != {tuple(sorted(x)) for x in epoch_4}  # other groups
    c = SizeBucketBatchSampler(graphs, batch_size=16, seed=2)
    c.set_epoch(4)
    assert list(c) != epoch_4


def test_evaluation_order_is_fixed_and_sorted(graphs):
    sampler = SizeBucketBatchSampler(graphs, batch_size=50, shuffle=False)
    first = list(sampler)
    sampler.set_epoch(7)
    assert list(sampler) == first
    sizes = [graphs[i].num_nodes for b in first for i in b]
    assert sizes == sorted(sizes)


@pytest.mark.parametrize("drop_last", [False, True])
def test_replicas_share_out_the_epoch_without_overlap(graphs, drop_last):
    world = 3
    samplers = [
        SizeBucketBatchSampler(
            graphs, batch_size=32, seed=0, drop_last=drop_last, num_replicas=world, rank=r
        )
        for r in range(world)
    ]
    single = SizeBucketBatchSampler(graphs, batch_size=32, seed=0, drop_last=drop_last)
    shares = [list(s) for s in samplers]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == len(samplers[0])
    together = [b for step in zip(*shares, strict=True) for b in step]
    everything = list(single)
    if drop_last:  # 9 full batches: 3 each, nothing repeated
        assert sorted(map(tuple, together)) == sorted(map(tuple, everything))
    else:  # 10 batches padded to 12 by repeating the first two
        assert together[: len(everything)] == everything
        assert together[len(everything) :] == everything[:2]


def test_stock_dataloader_batches(graphs):
    sampler = SizeBucketBatchSampler(graphs, batch_size=32, seed=0)
    loader = DataLoader(graphs, batch_sampler=sampler)
    seen = []
    for batch, index in zip(loader, list(sampler), strict=True):
        assert batch.num_graphs == len(index)
        assert batch.smiles == [graphs[i].smiles for i in index]
        seen.extend(index)
    assert sorted(seen) == list(range(len(graphs)))


def test_empty_dataset_has_no_batches():
    for shuffle in (True, False):
        sampler = SizeBucketBatchSampler([], batch_size=4, shuffle=shuffle)
        assert list(sampler) == [] and len(sampler) == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=4, pool=0), "pool"),
        (dict(batch_size=4, jitter=1.0), "jitter"),
        (dict(batch_size=4, num_replicas=2, rank=2), "rank"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SizeBucketBatchSampler([3, 4, 5], **kwargs)
