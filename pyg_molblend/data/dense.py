"""Padded dense tensors of a molecule batch, the model's input."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.utils import degree as node_degree
from torch_geometric.utils import to_dense_batch

from pyg_molblend.constants import (
    DEFAULT_MAX_HOPS,
    FEATURIZER,
    MAX_SPD,
    NO_EDGE,
    NUM_ATOM_FEATURES,
    SPD_PAD,
    SPD_UNREACHABLE,
)
from pyg_molblend.functional import pair_index, pairwise_distance, shortest_path

__all__ = ["DenseMolBatch", "to_dense"]


@dataclass
class DenseMolBatch:
    r"""A batch of :math:`B` molecules padded to :math:`N` atoms.

    Attributes:
        x: ``[B, N, 9]`` OGB atom features (long), 0 in padding.
        mask: ``[B, N]`` True for real atoms.
        degree: ``[B, N]`` number of bonded neighbours (long), 0 in padding.
        spd: ``[B, N, N]`` shortest-path distance (long): 0 on the diagonal,
            :obj:`SPD_UNREACHABLE` (255) between fragments, :obj:`SPD_PAD` (-1) in padding.
        path_edge: ``[B, N, N, K]`` rows of :attr:`edge_attr` for the first :math:`K` bonds
            of one shortest path from :math:`i` to :math:`j`, :obj:`NO_EDGE` (-1) elsewhere.
        edge_attr: ``[E, 3]`` OGB bond features of the whole batch (long).
        has_pos: ``[B]`` True for molecules with real 3D coordinates.
        pos: ``[B, N, 3]`` coordinates in Angstrom, or :obj:`None` if the batch has no 3D
            at all. Zero for padding and for molecules with ``has_pos`` False: read them
            through :attr:`has_pos` (and :attr:`pair_has_pos`).
        dist: ``[B, N, N]`` Euclidean distances in Angstrom, same conventions as :attr:`pos`.
        batch: ``[num_atoms]`` graph id of every atom of the sparse batch (for scattering
            dense atom states back with ``out[mask]``).
        descriptors: ``[B, D]`` per-molecule features carried over from the sparse batch's
            ``descriptors`` (see :class:`~pyg_molblend.transforms.AddDescriptors`), or
            :obj:`None` when it has none.
        edge_index: ``[2, E]`` the sparse batch's bonds (atom ids as in :attr:`batch`,
            features in :attr:`edge_attr`), for a message-passing model on the same batch:
            ``x[mask]``, :attr:`edge_index`, :attr:`edge_attr` and :attr:`batch` are the
            sparse batch. :obj:`None` in a batch built without it.

    Examples:
        >>> from torch_geometric.data import Batch
        >>> from pyg_molblend.data import from_smiles, to_dense
        >>> dense = to_dense(Batch.from_data_list([from_smiles("CCO"), from_smiles("CN")]))
        >>> dense.batch_size, dense.max_num_nodes, dense.pair_mask[1].tolist()
        (2, 3, [[True, True, False], [True, True, False], [False, False, False]])
    """

    x: Tensor
    mask: Tensor
    degree: Tensor
    spd: Tensor
    path_edge: Tensor
    edge_attr: Tensor
    has_pos: Tensor
    pos: Tensor | None
    dist: Tensor | None
    batch: Tensor
    descriptors: Tensor | None = None
    edge_index: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.x.size(0)

    @property
    def max_num_nodes(self) -> int:
        return self.x.size(1)

    @property
    def pair_mask(self) -> Tensor:
        """``[B, N, N]`` True where both atoms are real."""
        return self.mask.unsqueeze(2) & self.mask.unsqueeze(1)

    @property
    def pair_has_pos(self) -> Tensor:
        """``[B, N, N]`` True for real pairs of molecules with 3D coordinates."""
        return self.pair_mask & self.has_pos.view(-1, 1, 1)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> DenseMolBatch:
        """A batch on :obj:`device` (tensors already there are shared, not copied);
        :obj:`non_blocking` copies asynchronously, as :meth:`torch.Tensor.to`."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return DenseMolBatch(
            **{
                name: None if value is None else value.to(device, non_blocking=non_blocking)
                for name, value in values.items()
            }
        )


def to_dense(
    batch: Batch | Data,
    max_distance: int = MAX_SPD,
    max_hops: int = DEFAULT_MAX_HOPS,
) -> DenseMolBatch:
    r"""Pad a PyG batch of molecules into a :class:`DenseMolBatch`.

    Pair fields stored by :class:`~pyg_molblend.transforms.AddShortestPath` and
    :class:`~pyg_molblend.transforms.AddPairwiseDistance` are unflattened; those that were
    not precomputed are computed here, for the whole batch at once and on its device, by
    the same kernels (:func:`~pyg_molblend.functional.shortest_path`,
    :func:`~pyg_molblend.functional.pairwise_distance`). Both routes give identical
    tensors.

    Args:
        batch (Batch or Data): molecules from :func:`~pyg_molblend.data.from_smiles`
            (one :class:`Data` is a batch of one).
        max_distance (int, optional): SPD cap applied here. (default: :obj:`254`)
        max_hops (int, optional): number of path bonds :math:`K`; stored paths must have
            at least that many. (default: :obj:`5`)

    Every molecule must carry ``featurizer == "ogb"``
    (:data:`~pyg_molblend.constants.FEATURIZER`), as :func:`~pyg_molblend.data.from_smiles`,
    :func:`~pyg_molblend.data.from_mol` and the datasets of this package write it: graphs
    of another featurizer (PyG's ``torch_geometric.utils.from_smiles``) have the same
    shapes but other feature meanings, and would pass silently otherwise.

    Raises:
        ValueError: on graphs without the ``"ogb"`` featurizer tag, missing or malformed
            atom features, stored paths shorter than :obj:`max_hops`, or non-finite
            coordinates in a molecule flagged ``has_pos``.

    Examples:
        >>> from torch_geometric.data import Batch
        >>> from pyg_molblend.data import from_smiles
        >>> dense = to_dense(Batch.from_data_list([from_smiles("CCO"), from_smiles("C")]))
        >>> dense.spd[0].tolist(), dense.mask.tolist()
        ([[0, 1, 2], [1, 0, 1], [2, 1, 0]], [[True, True, True], [True, False, False]])
    """
    _check_featurizer(batch)
    x = getattr(batch, "x", None)
    if x is None or x.dim() != 2 or x.size(1) != NUM_ATOM_FEATURES or x.is_floating_point():
        shape = None if x is None else (tuple(x.shape), x.dtype)
        raise ValueError(
            f"to_dense needs integer OGB atom features x [N, {NUM_ATOM_FEATURES}] "
            f"(pyg_molblend.data.from_smiles), got {shape}"
        )
    device = x.device
    num_atoms = x.size(0)
    if isinstance(batch, Batch):
        ptr, node_batch, num_graphs = batch.ptr, batch.batch, batch.num_graphs
    else:
        ptr = torch.tensor([0, num_atoms], device=device)
        node_batch = torch.zeros(num_atoms, dtype=torch.long, device=device)
        num_graphs = 1
    x_dense, mask = to_dense_batch(x, node_batch, batch_size=num_graphs)
    width = x_dense.size(1)
    edge_index = batch.edge_index
    deg = node_degree(edge_index[1], num_atoms, dtype=torch.long)
    deg_dense, _ = to_dense_batch(deg, node_batch, batch_size=num_graphs)

    spd, path = _pairs(batch, edge_index, ptr, node_batch, num_graphs, max_distance, max_hops)
    graph, row, col = pair_index(ptr)
    flat = (graph * width + row) * width + col
    spd_dense = torch.full((num_graphs * width * width,), SPD_PAD, dtype=torch.long, device=device)
    spd_dense[flat] = spd
    path_dense = torch.full(
        (num_graphs * width * width, max_hops), NO_EDGE, dtype=torch.long, device=device
    )
    path_dense[flat] = path

    pos_dense = dist_dense = None
    has_pos = torch.zeros(num_graphs, dtype=torch.bool, device=device)
    if getattr(batch, "pos", None) is not None:
        stored = getattr(batch, "has_pos", None)
        has_pos = torch.ones_like(has_pos) if stored is None else stored.view(-1).bool()
        pos_dense, _ = to_dense_batch(batch.pos, node_batch, batch_size=num_graphs)
        finite = torch.isfinite(pos_dense).all(-1).all(-1) | ~has_pos
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0])
            raise ValueError(
                f"Molecule {bad} of the batch ({_smiles(batch, bad)!r}) has has_pos=True "
                "but non-finite coordinates"
            )
        keep = has_pos.view(-1, 1, 1)
        pos_dense = torch.where(keep & mask.unsqueeze(-1), pos_dense, 0.0)
        if getattr(batch, "dist", None) is not None:
            dist_dense = torch.zeros(
                num_graphs * width * width, device=device, dtype=batch.dist.dtype
            )
            dist_dense[flat] = batch.dist
            dist_dense = dist_dense.view(num_graphs, width, width)
        else:
            dist_dense = pairwise_distance(pos_dense, mask)
        dist_dense = torch.where(keep, dist_dense, 0.0)

    return DenseMolBatch(
        x=x_dense,
        mask=mask,
        degree=deg_dense,
        spd=spd_dense.view(num_graphs, width, width),
        path_edge=path_dense.view(num_graphs, width, width, max_hops),
        edge_attr=batch.edge_attr,
        has_pos=has_pos,
        pos=pos_dense,
        dist=dist_dense,
        batch=node_batch,
        descriptors=getattr(batch, "descriptors", None),
        edge_index=edge_index,
    )


def _pairs(
    batch: Batch | Data,
    edge_index: Tensor,
    ptr: Tensor,
    node_batch: Tensor,
    num_graphs: int,
    max_distance: int,
    max_hops: int,
) -> tuple[Tensor, Tensor]:
    """Flat SPD and path edges (batch-global edge ids): stored ones, or computed now."""
    spd = getattr(batch, "spd", None)
    path = getattr(batch, "path_edge", None)
    if spd is None or path is None:
        return shortest_path(edge_index, ptr, max_distance, max_hops)
    if path.size(1) < max_hops:
        raise ValueError(
            f"Stored path_edge keeps {path.size(1)} hops but max_hops={max_hops} was asked; "
            "recompute with AddShortestPath(max_hops=...) or lower max_hops"
        )
    spd = spd.to(torch.long)
    spd = torch.where(spd == SPD_UNREACHABLE, spd, spd.clamp(max=max_distance))
    num_edges = torch.bincount(node_batch[edge_index[0]], minlength=num_graphs)
    edge_start = torch.cumsum(num_edges, 0) - num_edges
    size = ptr.diff()
    offset = torch.repeat_interleave(edge_start, size * size, output_size=spd.numel())
    path = path[:, :max_hops].to(torch.long)
    path = torch.where(path >= 0, path + offset.unsqueeze(1), NO_EDGE)
    return spd, path


def _check_featurizer(batch: Batch | Data) -> None:
    """Refuses graphs that :func:`~pyg_molblend.data.from_smiles` did not make."""
    tag = getattr(batch, "featurizer", None)
    tags = tag if isinstance(tag, (list, tuple)) else [tag]
    wrong = [t for t in tags if t != FEATURIZER]
    if wrong or not tags:
        raise ValueError(
            f"to_dense needs graphs with the {FEATURIZER!r} atom and bond vocabulary "
            f"(data.featurizer == {FEATURIZER!r}), got featurizer={wrong[0] if wrong else None!r}; "
            "featurize molecules with pyg_molblend.data.from_smiles (or from_mol), not "
            "torch_geometric.utils.from_smiles"
        )


def _smiles(batch: Batch | Data, index: int) -> str:
    smiles = getattr(batch, "smiles", None)
    if isinstance(smiles, (list, tuple)):
        return smiles[index]
    return smiles if isinstance(smiles, str) else f"molecule {index}"
