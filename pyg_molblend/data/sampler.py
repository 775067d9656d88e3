"""Batches of molecules of similar size, for the stock PyG ``DataLoader``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

__all__ = ["SizeBucketBatchSampler", "num_nodes_of"]


def num_nodes_of(dataset: Dataset | Sequence) -> Tensor:
    """Atom count of every molecule of :obj:`dataset`, ``[len(dataset)]`` (long).

    For a PyG :class:`~torch_geometric.data.InMemoryDataset` (or a subset of one, such as
    ``dataset[index]``) the counts are read from its collated storage without building a
    single :class:`~torch_geometric.data.Data`; a dataset with a ``num_nodes_per_graph``
    tensor (:class:`~pyg_molblend.datasets.OnDiskMoleculeDataset`) gives them itself; any
    other sequence of graphs is walked.

    Examples:
        >>> from pyg_molblend.data import from_smiles
        >>> num_nodes_of([from_smiles("CCO"), from_smiles("c1ccccc1")]).tolist()
        [3, 6]
    """
    counts = getattr(dataset, "num_nodes_per_graph", None)
    if isinstance(counts, Tensor):  # an on-disk store keeps them in its index
        return counts
    slices = getattr(dataset, "slices", None)
    if isinstance(slices, dict) and "x" in slices and hasattr(dataset, "indices"):
        counts = slices["x"].diff()
        return counts[torch.as_tensor(list(dataset.indices()), dtype=torch.long)]
    return torch.tensor([int(dataset[i].num_nodes) for i in range(len(dataset))], dtype=torch.long)


class SizeBucketBatchSampler(Sampler[list[int]]):
    r"""Yields batches of molecules of similar atom count, so that padding a batch to its
    largest molecule wastes little.

    The model's cost grows with the padded size :math:`N` (pair tensors are
    :math:`[B, H, N, N]`); a random batch is padded to its largest molecule, and only
    16-30% of the padded atom pairs of random batches of 32 are real (training parts of
    the Tox21, ESOL and BBBP scaffold splits); sorted by size, 88-93%.

    With :obj:`shuffle` (training), every epoch draws a random permutation, sorts it by
    atom count (ties keep the random order; with :obj:`pool`, each run of :obj:`pool`
    batches is sorted on its own), cuts it into batches and shuffles the order of the
    batches: which molecules share a batch and the order of batches both change from
    epoch to epoch, and only the last batch of an epoch can be short. The draw is seeded by
    ``seed + epoch`` (call :meth:`set_epoch` before each epoch, as with
    :class:`~torch.utils.data.distributed.DistributedSampler`), so every process of a
    distributed run sees the same batches. Without :obj:`shuffle` (evaluation,
    inference), molecules are sorted by size once, stably: the batches are fixed, and a
    caller restores dataset order from the indices (:func:`~pyg_molblend.training.predict`
    does).

    With :obj:`num_replicas` > 1 each process takes every :obj:`num_replicas`-th batch
    starting at :obj:`rank`; the batch list is padded by repeating its first batches (or,
    with :obj:`drop_last`, cut) so that every process gets the same number of batches.

    Use it with the stock loader::

        from torch_geometric.loader import DataLoader
        sampler = SizeBucketBatchSampler(dataset, batch_size=32, seed=0)
        loader = DataLoader(dataset, batch_sampler=sampler)
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            for batch in loader:
                ...

    Args:
        dataset (Dataset or Sequence): the molecules (their atom counts are read once,
            see :func:`num_nodes_of`), or a ``[len]`` tensor or list of atom counts.
        batch_size (int): molecules per batch.
        shuffle (bool, optional): draw new batches every epoch. (default: :obj:`True`)
        seed (int, optional): seed of the draws. (default: :obj:`0`)
        drop_last (bool, optional): drop the last, short batch. (default: :obj:`False`)
        pool (int, optional): number of batches sorted together; smaller pools mix sizes
            more and pad more (on Tox21, batches of 32: 92% of the padded atom pairs are
            real with one pool, 75% with pools of 64 batches, 16% in random batches).
            (default: :obj:`None`, one pool per epoch)
        jitter (float, optional): when shuffling, each molecule's atom count is scaled
            by a random factor in :math:`[1 - \text{jitter}, 1 + \text{jitter}]` before
            sorting, so neighbouring sizes share batches in changing company, at the
            price of more padding (0.2: about 67% of the padded pairs real instead of
            88-93%). (default: :obj:`0.0`)
        num_replicas (int, optional): number of processes sharing the epoch.
            (default: :obj:`1`)
        rank (int, optional): this process's share. (default: :obj:`0`)

    Examples:
        >>> from pyg_molblend.data import from_smiles
        >>> data = [from_smiles(s) for s in ["C", "CCCCCC", "CC", "CCCCC", "CCC", "CCCC"]]
        >>> sampler = SizeBucketBatchSampler(data, batch_size=2, shuffle=False)
        >>> [[data[i].num_nodes for i in batch] for batch in sampler]  # similar sizes together
        [[1, 2], [3, 4], [5, 6]]
    """

    def __init__(
        self,
        dataset: Dataset | Sequence | Tensor,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        pool: int | None = None,
        jitter: float = 0.0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must lie in [0, 1), got {jitter!r}")
        if pool is not None and pool < 1:
            raise ValueError(f"pool must be a positive number of batches, got {pool!r}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must lie in [0, num_replicas), got {rank} of {num_replicas}")
        if isinstance(dataset, Tensor) or (
            isinstance(dataset, Sequence) and all(isinstance(s, int) for s in dataset)
        ):
            sizes = torch.as_tensor(dataset, dtype=torch.long).view(-1)
        else:
            sizes = num_nodes_of(dataset)
        self.sizes = sizes
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.pool = pool
        self.jitter = jitter
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the batches of :obj:`epoch` on the next iteration."""
        self.epoch = epoch

    def _all_batches(self) -> list[Tensor]:
        """The batches of the current epoch, for all replicas."""
        num = self.sizes.numel()
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(num, generator=generator)
            # Sort keys: atom counts, each scaled by its own factor in [1 - jitter, 1 + jitter],
            # so that molecules of neighbouring sizes share batches in changing company.
            key = self.sizes[order].float()
            if self.jitter:
                key = key * (1.0 + self.jitter * (2.0 * torch.rand(num, generator=generator) - 1.0))
            span = max(num if self.pool is None else self.pool * self.batch_size, 1)
            order = torch.cat(
                [
                    chunk[torch.sort(chunk_key, stable=True).indices]
                    for chunk, chunk_key in zip(order.split(span), key.split(span), strict=True)
                ]
            )
        else:
            order = torch.sort(self.sizes, stable=True).indices
        batches = [b for b in order.split(self.batch_size) if b.numel()]
        if self.drop_last and batches and batches[-1].numel() < self.batch_size:
            batches.pop()
        if self.shuffle and batches:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        if self.num_replicas > 1 and batches:
            extra = len(batches) % self.num_replicas
            if self.drop_last:
                batches = batches[: len(batches) - extra]
            elif extra:
                missing = self.num_replicas - extra
                batches = batches + (batches * (missing // len(batches) + 1))[:missing]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._all_batches()[self.rank :: self.num_replicas]:
            yield batch.tolist()

    def __len__(self) -> int:
        full, rest = divmod(self.sizes.numel(), self.batch_size)
        total = full + (1 if rest and not self.drop_last else 0)
        if self.num_replicas == 1:
            return total
        if self.drop_last:
            return total // self.num_replicas
        return -(-total // self.num_replicas)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.sizes.numel()}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last}, "
            f"pool={self.pool}, jitter={self.jitter}, num_replicas={self.num_replicas}, "
            f"rank={self.rank})"
        )
