"""Pure-torch, device-agnostic kernels shared by the transforms and :func:`to_dense`."""

from pyg_molblend.functional.distance import pairwise_distance
from pyg_molblend.functional.shortest_path import pair_index, shortest_path

__all__ = ["pair_index", "pairwise_distance", "shortest_path"]
