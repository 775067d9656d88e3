from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyg_molblend.nn.dropout import Dropout, dropout

__all__ = [
    "BLOCK_BYTES",
    "MIN_SOFTMAX_WIDTH",
    "BlendedGraphTransformer",
    "DropPath",
    "batch_chunk",
    "cpu_attention",
    "in_batch_chunks",
    "key_padding_bias",
    "pad_softmax_rows",
]

#: Largest intermediate, in bytes, that the pair-wise modules with a per-molecule split
#: (:class:`~pyg_molblend.nn.PairHead`'s loss, :class:`~pyg_molblend.nn.GaussianDistanceBias`,
#: :class:`~pyg_molblend.nn.DenoiseHead`) make at once: glibc serves blocks under 32 MiB
#: from its heap, larger ones are mapped and faulted in afresh every step (see
#: :func:`~pyg_molblend.training.utils.tune_malloc`).
BLOCK_BYTES = 16 << 20


def batch_chunk(batch: int, bytes_per_molecule: int, budget: int = BLOCK_BYTES) -> int:
    """Molecules per chunk so that a chunk's intermediate stays within :obj:`budget`
    bytes, the chunks as even as their number allows (at least one molecule each).

    Examples:
        >>> batch_chunk(64, 10 << 20, 16 << 20), batch_chunk(64, 100, 16 << 20)
        (1, 64)
        >>> batch_chunk(64, (16 << 20) // 63)  # 63 would fit: two chunks of 32
        32
        >>> batch_chunk(0, 100)  # an empty batch is one (empty) chunk
        1
    """
    per_chunk = max(1, budget // max(bytes_per_molecule, 1))
    if batch <= per_chunk:
        return max(batch, 1)
    return math.ceil(batch / math.ceil(batch / per_chunk))


def in_batch_chunks(
    fn: Callable[..., Any],
    tensors: Sequence[Tensor],
    bytes_per_molecule: int,
    budget: int = BLOCK_BYTES,
) -> Any:
    """``fn(*tensors)`` computed :func:`batch_chunk` molecules at a time (every tensor
    sliced along its first, batch, dimension) and its outputs, a tensor or a tuple of
    tensors, concatenated along that dimension; one call when the batch fits.

    Examples:
        >>> x = torch.arange(6.0).view(3, 2)
        >>> calls = []
        >>> def double(t):
        ...     calls.append(len(t))
        ...     return 2 * t, t.sum(1)
        >>> out, total = in_batch_chunks(double, [x], bytes_per_molecule=8, budget=16)
        >>> calls, out.tolist(), total.tolist()
        ([2, 1], [[0.0, 2.0], [4.0, 6.0], [8.0, 10.0]], [1.0, 5.0, 9.0])
    """
    batch = tensors[0].size(0)
    per_chunk = batch_chunk(batch, bytes_per_molecule, budget)
    if per_chunk >= batch:
        return fn(*tensors)
    parts = [fn(*(t[i : i + per_chunk] for t in tensors)) for i in range(0, batch, per_chunk)]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(outputs) for outputs in zip(*parts, strict=True))
    return torch.cat(parts)


def key_padding_bias(mask: Tensor, dtype: torch.dtype = torch.float) -> Tensor:
    """``[B, 1, 1, N]`` additive attention bias: 0 for real keys, -inf for padded ones
    (``mask`` ``[B, N]``, True = real). Added to ``[B, H, N, N]`` logits, it costs a
    tenth of a ``masked_fill`` of them on the CPU, and its backward pass is free.

    Examples:
        >>> key_padding_bias(torch.tensor([[True, False]])).view(-1).tolist()
        [0.0, -inf]
    """
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return bias.masked_fill(~mask, float("-inf")).view(mask.size(0), 1, 1, mask.size(1))


#: The narrowest softmax row :func:`pad_softmax_rows` leaves on the CPU: below the float
#: vector width, torch's CPU softmax, log-softmax and their backward run a scalar loop
#: (torch 2.13 with AVX-512: 491 and 210 us for ``[32, 8, 15, 15]`` against 48 and 11 us
#: for ``[32, 8, 16, 16]``; 16 is also the fastest width with AVX2).
MIN_SOFTMAX_WIDTH = 16


def pad_softmax_rows(x: Tensor) -> Tensor:
    """:obj:`x` with its last dimension padded with :obj:`-inf` up to
    :data:`MIN_SOFTMAX_WIDTH` on the CPU (unchanged elsewhere, or when wide enough): a
    (log-)softmax over the result, cut back to the first ``x.size(-1)`` entries, equals
    the one over :obj:`x`, and a cross-entropy against class indices is the same, only
    faster (2-3x for rows of 8 to 15, forward and backward).

    Examples:
        >>> x = torch.randn(4, 11)
        >>> padded = pad_softmax_rows(x)
        >>> padded.shape, bool(torch.allclose(padded.softmax(-1)[:, :11], x.softmax(-1)))
        (torch.Size([4, 16]), True)
    """
    extra = MIN_SOFTMAX_WIDTH - x.size(-1)
    if extra <= 0 or x.device.type != "cpu":
        return x
    return F.pad(x, (0, extra), value=float("-inf"))


def cpu_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_bias: Tensor,
    keys: Tensor,
    dropout_p: float = 0.0,
    training: bool = False,
) -> Tensor:
    r""":math:`\mathrm{softmax}(QK^\top / \sqrt{d} + \Psi + M) V` on the CPU, where
    :math:`M` is :obj:`-inf` for padded keys, with dropout on the attention weights in
    training (:func:`~pyg_molblend.nn.dropout.dropout`'s cheaper mask).

    Explicit products replace :func:`torch.nn.functional.scaled_dot_product_attention`,
    whose CPU kernel measures 2-3x slower at these sizes (batches of 32 molecules of 17-64
    atoms, 8 heads of 16), and rows of fewer than :data:`MIN_SOFTMAX_WIDTH` keys are
    padded for the softmax (:func:`pad_softmax_rows`; 2x faster forward and backward for
    molecules of 14 atoms).

    Shapes:
        - **input:** ``q``, ``k``, ``v`` ``[B, H, N, d]``, ``attn_bias`` ``[B, H, N, N]``,
          ``keys`` ``[B, N]`` (True = a key to attend to; every row needs one)
        - **output:** ``[B, H, N, d]``

    Examples:
        >>> q, k, v = torch.randn(3, 1, 2, 5, 4).unbind(0)
        >>> keys = torch.tensor([[True, True, True, False, False]])
        >>> out = cpu_attention(q, k, v, torch.zeros(1, 2, 5, 5), keys)
        >>> ref = torch.softmax(q @ k[..., :3, :].transpose(-1, -2) / 2, -1) @ v[..., :3, :]
        >>> bool(torch.allclose(out, ref, atol=1e-6))
        True
    """
    logits = torch.matmul(q * q.size(-1) ** -0.5, k.transpose(-1, -2))
    logits = logits + attn_bias.to(q.dtype) + key_padding_bias(keys, q.dtype)
    prob = torch.softmax(pad_softmax_rows(logits), -1)[..., : k.size(-2)]
    return dropout(prob, dropout_p, training) @ v


class DropPath(nn.Module):
    r"""Stochastic depth per sample: in training, each sample's residual branch is
    dropped with probability :obj:`p` and kept ones are scaled by :math:`1/(1-p)`.

    The reference's ``DropPath`` draws its mask over dim 0 of a ``(T, B, C)`` tensor and so
    drops atom positions shared across the batch; here the mask is ``[B, 1, 1]``.

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> out = DropPath(0.5)(torch.ones(4, 3, 2)).flatten(1)  # per sample: kept x2 or 0
        >>> all(row.unique().tolist() in ([0.0], [2.0]) for row in out)
        True
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        # Compiled code takes p as an input instead of branching on it, so layers whose
        # probabilities differ (pretraining's linear schedule) share one graph.
        if not self.training or (not torch.compiler.is_compiling() and self.p == 0.0):
            return x
        keep = torch.rand((x.size(0),) + (1,) * (x.dim() - 1), device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class BlendedGraphTransformer(nn.Module):
    r"""Transformer layer with an additive attention bias (MoleBLEND eq. 2).

    .. math::
        \mathrm{Attention}(Q, K, V) = \mathrm{softmax}\Big(\frac{QK^\top}{\sqrt{d}}
        + \Psi\Big) V

    where :math:`\Psi` is the per-head relation bias (blended, 2D, 3D or 2D+3D, see
    :class:`~pyg_molblend.nn.ModalityBlend`) and padded keys are masked out. On
    accelerators attention runs through
    :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels, the
    :math:`[B, H, N, N]` logits never formed by hand); on the CPU through
    :func:`cpu_attention`, which measures faster there. Post-LayerNorm by default, as the reference
    (``norm_first=True`` gives pre-LN); stochastic depth is per sample.

    Paper: `Multimodal Molecular Pretraining via Modality Blending
    <https://arxiv.org/abs/2307.06235>`_.

    Args:
        channels (int): model width :math:`C`.
        heads (int): number of attention heads :math:`H` (must divide :math:`C`).
        ffn_channels (int, optional): hidden size of the feed-forward block.
            (default: :obj:`channels`, as MoleBLEND-base)
        dropout (float, optional): dropout on the two residual branches. (default: :obj:`0.0`)
        attn_dropout (float, optional): dropout on attention weights. (default: :obj:`0.1`)
        activation_dropout (float, optional): dropout after the FFN activation.
            (default: :obj:`0.0`)
        drop_path (float, optional): stochastic depth probability. (default: :obj:`0.0`)
        norm_first (bool, optional): pre-LN instead of post-LN. (default: :obj:`False`)

    Shapes:
        - **input:** ``x`` ``[B, N, C]``, ``attn_bias`` ``[B, H, N, N]``, ``mask``
          ``[B, N]`` (True = real atom), optional ``num_queries`` (int)
        - **output:** ``[B, N, C]``, zero at padded positions (``[B, num_queries, C]``,
          its first rows, when :obj:`num_queries` is given).

    Examples:
        >>> layer = BlendedGraphTransformer(16, heads=4)
        >>> x, bias = torch.randn(2, 5, 16), torch.zeros(2, 4, 5, 5)
        >>> mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
        >>> out = layer(x, bias, mask)
        >>> out.shape, bool((out[1, 3:] == 0).all())  # padded atoms stay zero
        (torch.Size([2, 5, 16]), True)
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        ffn_channels: int | None = None,
        dropout: float = 0.0,
        attn_dropout: float = 0.1,
        activation_dropout: float = 0.0,
        drop_path: float = 0.0,
        norm_first: bool = False,
    ) -> None:
        super().__init__()
        if channels % heads != 0:
            raise ValueError(f"heads ({heads}) must divide channels ({channels})")
        self.channels = channels
        self.heads = heads
        self.ffn_channels = ffn_channels or channels
        self.attn_dropout = attn_dropout
        self.norm_first = norm_first
        self.q_proj = nn.Linear(channels, channels)
        self.k_proj = nn.Linear(channels, channels)
        self.v_proj = nn.Linear(channels, channels)
        self.out_proj = nn.Linear(channels, channels)
        self.attn_norm = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, self.ffn_channels)
        self.fc2 = nn.Linear(self.ffn_channels, channels)
        self.ffn_norm = nn.LayerNorm(channels)
        self.dropout = Dropout(dropout)
        self.activation_dropout = Dropout(activation_dropout)
        self.drop_path = DropPath(drop_path)

    def reset_parameters(self) -> None:
        for module in self.children():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def attention(
        self, x: Tensor, attn_bias: Tensor, mask: Tensor, num_queries: int | None = None
    ) -> Tensor:
        """Multi-head attention of ``x`` over itself, ``[B, N, C]``; with
        :obj:`num_queries`, only the first that many positions ask (``[B, num_queries, C]``)
        while every position is still a key."""
        batch, num_nodes, _ = x.shape
        head_dim = self.channels // self.heads
        queries = x if num_queries is None else x[:, :num_queries]
        num_rows = queries.size(1)

        def split(t: Tensor, rows: int) -> Tensor:
            return t.view(batch, rows, self.heads, head_dim).transpose(1, 2)

        q = split(self.q_proj(queries), num_rows)
        k, v = split(self.k_proj(x), num_nodes), split(self.v_proj(x), num_nodes)
        if num_queries is not None:
            attn_bias = attn_bias[:, :, :num_queries]
        # A row whose keys are all padding (an all-padding sample) would softmax to NaN:
        # let it see every key; its output is zeroed below anyway.
        keys = mask | ~mask.any(-1, keepdim=True)
        if q.device.type == "cpu":
            out = cpu_attention(q, k, v, attn_bias, keys, self.attn_dropout, self.training)
        else:
            bias = attn_bias.to(q.dtype) + key_padding_bias(keys, q.dtype)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=self.attn_dropout if self.training else 0.0
            )
        return self.out_proj(out.transpose(1, 2).reshape(batch, num_rows, self.channels))

    def feed_forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.activation_dropout(F.gelu(self.fc1(x))))

    def forward(
        self, x: Tensor, attn_bias: Tensor, mask: Tensor, num_queries: int | None = None
    ) -> Tensor:
        """The layer's output ``[B, N, C]``, or with :obj:`num_queries` only that of the
        first :obj:`num_queries` positions (``[B, num_queries, C]``, equal to the first
        rows of the full output): the other positions are still keys and values of the
        attention, but nothing else is computed for them. A readout of the graph token
        (position 0) needs only ``num_queries=1`` in the last layer, which then costs
        about a quarter of a full one (the key and value projections)."""
        rows = x if num_queries is None else x[:, :num_queries]
        kept = mask if num_queries is None else mask[:, :num_queries]
        if self.norm_first:
            normed = self.attn_norm(x)
            attended = self.attention(normed, attn_bias, mask, num_queries)
            x = rows + self.drop_path(self.dropout(attended))
            x = x + self.drop_path(self.dropout(self.feed_forward(self.ffn_norm(x))))
        else:
            attended = self.attention(x, attn_bias, mask, num_queries)
            x = self.attn_norm(rows + self.drop_path(self.dropout(attended)))
            x = self.ffn_norm(x + self.drop_path(self.dropout(self.feed_forward(x))))
        return x * kept.unsqueeze(-1).to(x.dtype)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.channels}, heads={self.heads}, "
            f"ffn_channels={self.ffn_channels}, norm_first={self.norm_first})"
        )
