from __future__ import annotations

import torch
from torch_geometric.data import Data
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

from pyg_molblend.constants import DEFAULT_MAX_HOPS, MAX_SPD, MAX_STORED_EDGES
from pyg_molblend.functional.shortest_path import one_graph_shortest_path

__all__ = ["AddShortestPath"]


@functional_transform("add_shortest_path")
class AddShortestPath(BaseTransform):
    r"""Adds the shortest-path distance (SPD) and the first bonds of one shortest path
    for every ordered atom pair (functional name: :obj:`add_shortest_path`).

    Pair data is stored flattened row-major, pair :math:`(i, j)` at :math:`i N + j`, so the
    stock :class:`torch_geometric.loader.DataLoader` batches it by concatenation and
    :func:`pyg_molblend.data.to_dense` restores ``[B, N, N]`` tensors from ``batch.ptr``:

    * ``data.spd`` ``[N * N]`` (``uint8``): hop distance, 0 on the diagonal, capped at
      :obj:`max_distance`; :obj:`~pyg_molblend.constants.SPD_UNREACHABLE` (255) between
      atoms of different fragments.
    * ``data.path_edge`` ``[N * N, max_hops]`` (``int16``): ids (columns of
      ``edge_index``) of the first :math:`\min(d_{ij}, K)` bonds along one shortest path
      from :math:`i` to :math:`j`, -1 elsewhere. Their features are
      ``edge_attr[path_edge]``.

    That is :math:`1 + 2K` bytes per ordered pair (11 for :math:`K = 5`); the reference
    pipeline keeps an ``int64`` array of :math:`N^2 \cdot d_{max} \cdot 3` entries.
    The computation is :func:`pyg_molblend.functional.shortest_path`, the kernel
    :func:`~pyg_molblend.data.to_dense` runs on the fly when these fields are absent.

    Args:
        max_distance (int, optional): cap of the stored distance, at most 254.
            (default: :obj:`254`)
        max_hops (int, optional): number :math:`K` of path bonds kept.
            (default: :obj:`5`)

    Examples:
        >>> from pyg_molblend.data import from_smiles
        >>> data = AddShortestPath(max_hops=2)(from_smiles("CCO"))
        >>> data.spd.view(3, 3).tolist(), data.path_edge.shape
        ([[0, 1, 2], [1, 0, 1], [2, 1, 0]], torch.Size([9, 2]))
    """

    def __init__(self, max_distance: int = MAX_SPD, max_hops: int = DEFAULT_MAX_HOPS) -> None:
        if not 0 <= max_distance <= MAX_SPD:
            raise ValueError(f"max_distance must be in [0, {MAX_SPD}], got {max_distance}")
        if max_hops < 0:
            raise ValueError(f"max_hops must be non-negative, got {max_hops}")
        self.max_distance = max_distance
        self.max_hops = max_hops

    def forward(self, data: Data) -> Data:
        num_nodes, edge_index = data.num_nodes, data.edge_index
        if edge_index is None or num_nodes is None:
            raise ValueError("AddShortestPath needs 'edge_index' and a node count")
        if edge_index.size(1) > MAX_STORED_EDGES:
            raise ValueError(
                f"Molecule too large for stored paths: {edge_index.size(1)} directed "
                f"bonds (at most {MAX_STORED_EDGES}) in {getattr(data, 'smiles', 'a molecule')!r}"
            )
        data.spd, data.path_edge = one_graph_shortest_path(
            edge_index, num_nodes, self.max_distance, self.max_hops, torch.uint8, torch.int16
        )
        return data

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(max_distance={self.max_distance}, max_hops={self.max_hops})"
        )
