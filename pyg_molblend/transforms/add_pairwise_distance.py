from __future__ import annotations

from torch_geometric.data import Data
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

from pyg_molblend.functional import pairwise_distance

__all__ = ["AddPairwiseDistance"]


@functional_transform("add_pairwise_distance")
class AddPairwiseDistance(BaseTransform):
    r"""Adds the Euclidean distance of every ordered atom pair (functional name:
    :obj:`add_pairwise_distance`).

    ``data.dist`` ``[N * N]`` (``float32``, Angstrom) is stored flattened row-major like
    :class:`AddShortestPath`'s fields; 4 bytes per pair. A molecule whose conformer failed
    (``has_pos`` False, ``pos`` NaN) gets NaN distances, which
    :func:`~pyg_molblend.data.to_dense` never passes on.

    Raises:
        ValueError: if the data has no ``pos``.

    Examples:
        >>> from torch_geometric.data import Data
        >>> data = Data(pos=torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.5]]), num_nodes=2)
        >>> AddPairwiseDistance()(data).dist.tolist()
        [0.0, 1.5, 1.5, 0.0]
    """

    def forward(self, data: Data) -> Data:
        if getattr(data, "pos", None) is None:
            raise ValueError(
                "AddPairwiseDistance needs 'pos'; add AddConformer before it for "
                f"{getattr(data, 'smiles', 'this molecule')!r}"
            )
        data.dist = pairwise_distance(data.pos).view(-1)
        return data
