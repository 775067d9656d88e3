r"""Relation encoders: tensors in, per-head attention biases ``[B, H, N, N]`` out.

They take plain tensors (no graph objects) so each can be tested alone and reused in
other dense graph transformers. Padding follows :class:`~pyg_molblend.data.DenseMolBatch`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyg_molblend.constants import (
    ATOM_FEATURE_DIMS,
    BOND_FEATURE_DIMS,
    DEFAULT_MAX_HOPS,
    MAX_SPD,
    SPD_PAD,
    SPD_UNREACHABLE,
)
from pyg_molblend.nn.layer import BLOCK_BYTES, in_batch_chunks

__all__ = [
    "AtomEncoder",
    "DegreeEncoder",
    "EdgePathBias",
    "GaussianDistanceBias",
    "SPDBias",
]


def _offsets(dims: tuple[int, ...]) -> Tensor:
    """Start row of each feature in one shared table; row 0 of the table is padding."""
    return torch.tensor([0, *dims[:-1]]).cumsum(0) + 1


class _FeatureSum(nn.Module):
    """Sum of one embedding per integer feature, all in one table (one lookup)."""

    def __init__(self, dims: tuple[int, ...], channels: int) -> None:
        super().__init__()
        self.dims = dims
        self.register_buffer("offset", _offsets(dims), persistent=False)
        self.register_buffer("limit", torch.tensor(dims), persistent=False)
        self.table = nn.Embedding(sum(dims) + 1, channels, padding_idx=0)

    def reset_parameters(self) -> None:
        self.table.reset_parameters()

    def forward(self, feat: Tensor, mask: Tensor | None = None) -> Tensor:
        # Checked on the host only: on an accelerator reading the result would stall the
        # device every step (from_smiles and from_mol only write in-range features).
        outside = (feat < 0) | (feat >= self.limit) if feat.device.type == "cpu" else None
        if outside is not None and bool(outside.any()):
            bad = outside.nonzero()[0].tolist()
            raise ValueError(
                f"Feature value {int(feat[tuple(bad)])} at {bad} is outside the OGB "
                f"vocabulary sizes {self.dims}"
            )
        index = feat + self.offset
        if mask is not None:
            index = index.masked_fill(~mask.unsqueeze(-1), 0)
        return self.table(index).sum(-2)


class AtomEncoder(_FeatureSum):
    r"""Sum of the embeddings of the 9 OGB atom features.

    Args:
        channels (int): embedding size :math:`C`.

    Shapes:
        - **input:** ``x`` ``[..., 9]`` (long), ``mask`` ``[...]`` (True = real atom)
        - **output:** ``[..., C]``, zero for padded atoms.

    Examples:
        >>> from pyg_molblend.data import from_smiles
        >>> AtomEncoder(8)(from_smiles("CCO").x).shape
        torch.Size([3, 8])
    """

    def __init__(self, channels: int) -> None:
        super().__init__(ATOM_FEATURE_DIMS, channels)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.table.embedding_dim})"


class DegreeEncoder(nn.Module):
    r"""Embedding of the number of bonded neighbours (Graphormer's centrality encoding).

    The reference adds an in-degree and an out-degree table looked up with the same
    index; their sum is one table, so we keep one.

    Args:
        channels (int): size :math:`C` of the embedding.
        max_degree (int, optional): degrees above it share the last row.
            (default: :obj:`64`)

    Shapes:
        - **input:** ``degree`` ``[B, N]`` (long), ``mask`` ``[B, N]``
        - **output:** ``[B, N, C]``, zero for padded atoms.

    Examples:
        >>> encoder = DegreeEncoder(channels=4)
        >>> out = encoder(torch.tensor([[1, 2, 0]]), torch.tensor([[True, True, False]]))
        >>> out.shape, bool((out[0, 2] == 0).all())
        (torch.Size([1, 3, 4]), True)
    """

    def __init__(self, channels: int, max_degree: int = 64) -> None:
        super().__init__()
        self.max_degree = max_degree
        self.table = nn.Embedding(max_degree + 2, channels, padding_idx=0)

    def reset_parameters(self) -> None:
        self.table.reset_parameters()

    def forward(self, degree: Tensor, mask: Tensor) -> Tensor:
        index = (degree.clamp(max=self.max_degree) + 1).masked_fill(~mask, 0)
        return self.table(index)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.table.embedding_dim}, max_degree={self.max_degree})"
        )


class SPDBias(nn.Module):
    r"""One learned scalar per head for each shortest-path distance.

    Rows: 0 for padding, :math:`d + 1` for distance :math:`d \le` :obj:`max_distance`
    (larger distances share the last one), :obj:`max_distance` + 2 for unreachable pairs.

    Args:
        heads (int): number of heads :math:`H`.
        max_distance (int, optional): distances above it share one row, at most 254.
            (default: :obj:`20`)

    Shapes:
        - **input:** ``spd`` ``[B, N, N]`` (long, :obj:`SPD_PAD` in padding)
        - **output:** ``[B, H, N, N]``, zero on padded pairs.

    Examples:
        >>> bias = SPDBias(heads=2)(torch.tensor([[[0, 1], [1, 0]]]))
        >>> bias.shape, bool(torch.equal(bias[0, :, 0, 1], bias[0, :, 1, 0]))
        (torch.Size([1, 2, 2, 2]), True)
    """

    def __init__(self, heads: int, max_distance: int = 20) -> None:
        super().__init__()
        if not 1 <= max_distance <= MAX_SPD:
            raise ValueError(f"max_distance must be in [1, {MAX_SPD}], got {max_distance}")
        self.heads = heads
        self.max_distance = max_distance
        self.table = nn.Embedding(max_distance + 3, heads, padding_idx=0)

    def reset_parameters(self) -> None:
        self.table.reset_parameters()

    def forward(self, spd: Tensor) -> Tensor:
        index = spd.clamp(max=self.max_distance) + 1
        index = torch.where(spd == SPD_UNREACHABLE, self.max_distance + 2, index)
        index = index.masked_fill(spd == SPD_PAD, 0)
        # Padded pairs read zeros and pass no gradient back, as with padding_idx.
        weight = self.table.weight
        table = torch.cat([weight.new_zeros(1, self.heads), weight[1:]])
        if index.device.type == "cpu":  # a cheaper backward there (gather_rows)
            return gather_rows(table, index).permute(0, 3, 1, 2)
        return F.embedding(index, table).permute(0, 3, 1, 2)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(heads={self.heads}, max_distance={self.max_distance})"


class EdgePathBias(nn.Module):
    r"""Multi-hop edge encoding (Graphormer / Transformer-M, MoleBLEND's
    :math:`\Psi_{Edge}`).

    .. math::
        \Psi^{ij}_{Edge} = \frac{1}{s_{ij}} \sum_{k=1}^{\min(d_{ij}, K)}
        W_k^\top \bar{e}_k, \qquad \bar{e}_k = \tfrac{1}{3}\sum_{f=1}^{3}
        \mathrm{Emb}_f(\text{feature } f \text{ of the } k\text{-th bond})

    with one :math:`H \times H` matrix :math:`W_k` per hop and
    :math:`s_{ij} = \mathrm{clamp}(d_{ij}, 1, K)`. Because everything before the path
    gather is linear, :math:`W_k^\top \bar{e}` is computed once per *bond* and hop and
    then gathered, instead of the reference's ``[B, N, N, K, 3, H]`` embedding tensor.

    Args:
        heads (int): number of heads :math:`H`.
        max_hops (int, optional): largest number :math:`K` of path bonds it accepts.
            (default: :obj:`5`)

    Shapes:
        - **input:** ``path_edge`` ``[B, N, N, K]`` (rows of ``edge_attr``, -1 = none),
          ``edge_attr`` ``[E, 3]``, ``spd`` ``[B, N, N]``
        - **output:** ``[B, H, N, N]``, zero where there is no path.

    Examples:
        >>> from torch_geometric.data import Batch
        >>> from pyg_molblend.data import from_smiles, to_dense
        >>> dense = to_dense(Batch.from_data_list([from_smiles("CCO")]))
        >>> bias = EdgePathBias(heads=4)(dense.path_edge, dense.edge_attr, dense.spd)
        >>> bias.shape, bool((bias[0, :, 1, 1] == 0).all())  # a self pair has no path
        (torch.Size([1, 4, 3, 3]), True)
    """

    def __init__(self, heads: int, max_hops: int = DEFAULT_MAX_HOPS) -> None:
        super().__init__()
        self.heads = heads
        self.max_hops = max_hops
        self.edge = _FeatureSum(BOND_FEATURE_DIMS, heads)
        self.hop_weight = nn.Parameter(torch.empty(max_hops, heads, heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.edge.reset_parameters()
        nn.init.normal_(self.hop_weight, std=1.0 / math.sqrt(self.heads))

    def forward(self, path_edge: Tensor, edge_attr: Tensor, spd: Tensor) -> Tensor:
        num_hops = path_edge.size(-1)
        if num_hops > self.max_hops:
            raise ValueError(f"path_edge has {num_hops} hops, the encoder {self.max_hops}")
        mean = self.edge(edge_attr) / edge_attr.size(-1)  # [E, H]
        per_hop = torch.einsum("eh,khg->keg", mean, self.hop_weight[:num_hops])
        out = hop_sum(per_hop, path_edge.reshape(-1, num_hops), path_edge.device.type == "cpu")
        out = out.view(*path_edge.shape[:-1], self.heads)
        scale = spd.clamp(min=1, max=max(num_hops, 1)).to(out.dtype).unsqueeze(-1)
        return (out / scale).permute(0, 3, 1, 2)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(heads={self.heads}, max_hops={self.max_hops})"


def gather_rows(table: Tensor, index: Tensor) -> Tensor:
    """``table[index]`` (``table`` ``[R, W]``, ``index`` any shape, out ``[*index.shape,
    W]``) as a gather of single entries from the flattened table.

    For narrow rows this is a CPU speed-up of the backward pass: the gradient of a
    row-wise lookup (``nn.Embedding``, ``index_select(0, ...)``) is an ``index_add_``
    that calls a vector kernel per index, about 25 ns for a row of 8; the gradient of
    a flat gather is a 1-D ``index_add_``, a plain loop over the entries. :class:`SPDBias`
    (rows of 8 heads), forward + backward on 2 threads: 1.7 against 3.1 ms for 32
    molecules of 30 atoms, 20 against 44 ms for 31 of 132 (the forward alone is slower,
    the backward much faster). Not for :func:`hop_sum`: its rows are gathered from
    thousands of (hop, bond) rows and summed per pair, and both flat there measured
    slower (4.2 against 5.5 ms for 32 BBBP molecules of 22 atoms).

    Examples:
        >>> table = torch.arange(6.0).view(3, 2)
        >>> gather_rows(table, torch.tensor([[2, 0]])).tolist()
        [[[4.0, 5.0], [0.0, 1.0]]]
    """
    width = table.size(-1)
    flat = index.unsqueeze(-1) * width + torch.arange(width, device=index.device)
    return table.reshape(-1).index_select(0, flat.view(-1)).view(*index.shape, width)


def hop_sum(per_hop: Tensor, path: Tensor, compact: bool) -> Tensor:
    """``out[p] = sum_k per_hop[k, path[p, k]]`` over the hops with a bond
    (``path[p, k] >= 0``): ``per_hop`` ``[K, E, H]``, ``path`` ``[P, K]``, out ``[P, H]``.

    Both routes are gathers whose backward pass is an ``index_add_``, 3-6x cheaper on
    the CPU than the ``index_put_(accumulate=True)`` of advanced indexing. With
    :obj:`compact` only the (pair, hop) entries with a bond are gathered (about 40%
    of them in a batch of drug-like molecules); counting them reads the host, so the
    other route, for devices where nothing may wait, gathers every entry from tables
    whose row 0 is "no bond".
    """
    num_hops, num_edges, heads = per_hop.shape
    if compact:
        pair, hop = (path >= 0).nonzero(as_tuple=True)
        rows = per_hop.reshape(-1, heads).index_select(0, hop * num_edges + path[pair, hop])
        return rows.new_zeros(path.size(0), heads).index_add_(0, pair, rows)
    table = torch.cat([per_hop.new_zeros(num_hops, 1, heads), per_hop], 1).view(-1, heads)
    index = path + 1 + torch.arange(num_hops, device=path.device) * (num_edges + 1)
    return table.index_select(0, index.view(-1)).view(-1, num_hops, heads).sum(1)


class GaussianDistanceBias(nn.Module):
    r"""Gaussian-basis encoding of 3D distances (Transformer-M's ``GaussianLayer``).

    For atoms :math:`i, j` with atomic-number indices :math:`a_i, a_j` and distance
    :math:`r_{ij}` (Angstrom):

    .. math::
        x_{ij} = (\gamma_{a_i} + \gamma'_{a_j}) r_{ij} + \beta_{a_i} + \beta'_{a_j}, \qquad
        \phi^k_{ij} = \frac{1}{\sqrt{2\pi}\sigma_k}
        \exp\!\Big(-\frac{(x_{ij} - \mu_k)^2}{2\sigma_k^2}\Big),
        \quad \sigma_k = |s_k| + 0.01

    The attention bias is :math:`\mathrm{MLP}(\phi_{ij}) \in \mathbb{R}^H`; the merged
    atom feature is :math:`W \sum_j \phi_{ij}` (summed over real partners :math:`j`,
    the self pair included). Computed in fp32. Ordered pairs use separate
    row/column tables, as the reference does. A batch whose ``[B, N, N, K]`` features
    would pass :attr:`block_bytes` is encoded a few molecules at a time (the same
    outputs), so that glibc serves each block from its heap instead of faulting in fresh
    pages every step (see :func:`~pyg_molblend.training.utils.tune_malloc`).

    Args:
        heads (int): number of heads :math:`H`.
        channels (int): size of the merged atom feature.
        num_kernels (int, optional): :math:`K`. (default: :obj:`128`)

    Shapes:
        - **input:** ``dist`` ``[B, N, N]``, ``atom_type`` ``[B, N]`` (OGB atomic-number
          index), ``pair_mask`` ``[B, N, N]`` (True where the distance is real)
        - **output:** bias ``[B, H, N, N]`` (zero where ``pair_mask`` is False) and atom
          feature ``[B, N, channels]``.

    Examples:
        >>> encoder = GaussianDistanceBias(heads=4, channels=8, num_kernels=16)
        >>> dist = torch.tensor([[[0.0, 1.5], [1.5, 0.0]]])
        >>> pair_mask = torch.ones(1, 2, 2, dtype=torch.bool)
        >>> bias, atom = encoder(dist, torch.tensor([[5, 7]]), pair_mask)
        >>> bias.shape, atom.shape
        (torch.Size([1, 4, 2, 2]), torch.Size([1, 2, 8]))
    """

    #: Largest fp32 ``[B, N, N, K]`` feature block made at once, in bytes.
    block_bytes: int = BLOCK_BYTES

    def __init__(self, heads: int, channels: int, num_kernels: int = 128) -> None:
        super().__init__()
        num_types = ATOM_FEATURE_DIMS[0]
        self.heads = heads
        self.num_kernels = num_kernels
        self.mean = nn.Parameter(torch.empty(num_kernels))
        self.std = nn.Parameter(torch.empty(num_kernels))
        self.mul = nn.Embedding(2 * num_types, 1)
        self.bias = nn.Embedding(2 * num_types, 1)
        self.num_types = num_types
        self.mlp = nn.Sequential(
            nn.Linear(num_kernels, num_kernels), nn.GELU(), nn.Linear(num_kernels, heads)
        )
        self.atom_proj = nn.Linear(num_kernels, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.reset_basis()
        for module in (*self.mlp, self.atom_proj):
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def reset_basis(self) -> None:
        """The init of the Gaussian basis the reference intends (it is overwritten there,
        see :meth:`MoleBlend.reset_parameters` with ``init="reference"``): means and
        widths uniform in [0, 3], multipliers 1, shifts 0."""
        nn.init.uniform_(self.mean, 0.0, 3.0)
        nn.init.uniform_(self.std, 0.0, 3.0)
        nn.init.constant_(self.mul.weight, 1.0)
        nn.init.constant_(self.bias.weight, 0.0)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(heads={self.heads}, "
            f"channels={self.atom_proj.out_features}, num_kernels={self.num_kernels})"
        )

    def scaled_distance(self, dist: Tensor, atom_type: Tensor) -> Tensor:
        r""":math:`x_{ij}`, the distance scaled and shifted per atom-type pair,
        ``[B, N, N, 1]`` (fp32)."""
        row = atom_type.unsqueeze(2)
        col = atom_type.unsqueeze(1) + self.num_types
        mul = (self.mul(row) + self.mul(col)).squeeze(-1)
        shift = (self.bias(row) + self.bias(col)).squeeze(-1)
        return (mul * dist.float() + shift).unsqueeze(-1)

    def basis(self, dist: Tensor, atom_type: Tensor) -> Tensor:
        """Gaussian features ``[B, N, N, K]`` (fp32)."""
        x = self.scaled_distance(dist, atom_type)
        std = self.std.abs() + 0.01
        # exp(-z^2 / 2 - log(sqrt(2 pi) std)) with z = x / std - mean / std: three passes
        # over [B, N, N, K] instead of six (forward + backward of a batch of 64 ZINC
        # molecules, K = 32, one thread: 16 -> 9 ms).
        inv_std = 1.0 / std
        z = torch.addcmul(-self.mean * inv_std, x, inv_std)
        log_norm = torch.log(math.sqrt(2 * math.pi) * std)
        return torch.exp(torch.addcmul(-log_norm, z, z, value=-0.5))

    def forward(self, dist: Tensor, atom_type: Tensor, pair_mask: Tensor) -> tuple[Tensor, Tensor]:
        # A few molecules at a time when the [B, N, N, K] features would pass block_bytes
        # (large molecules: 58 MB at 86 atoms, K = 32), so that each block comes from
        # glibc's heap instead of fresh pages; batches of drug-like molecules are one piece.
        size = 4 * self.num_kernels * dist.size(1) ** 2
        return in_batch_chunks(self._forward, (dist, atom_type, pair_mask), size, self.block_bytes)

    def _forward(self, dist: Tensor, atom_type: Tensor, pair_mask: Tensor) -> tuple[Tensor, Tensor]:
        phi = self.basis(dist, atom_type) * pair_mask.unsqueeze(-1)
        bias = self.mlp(phi.to(self.mlp[0].weight.dtype))
        bias = bias.masked_fill(~pair_mask.unsqueeze(-1), 0.0).permute(0, 3, 1, 2)
        atom = self.atom_proj(phi.sum(2).to(self.atom_proj.weight.dtype))
        return bias, atom
