"""Pretraining heads: modality-targeted pair heads (eq. 3) and the 3D denoising head."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyg_molblend.constants import IGNORE_INDEX
from pyg_molblend.nn.dropout import Dropout
from pyg_molblend.nn.layer import (
    BLOCK_BYTES,
    batch_chunk,
    in_batch_chunks,
    key_padding_bias,
    pad_softmax_rows,
)

__all__ = ["DenoiseHead", "PairCrossEntropy", "PairHead"]


class PairHead(nn.Module):
    r"""Modality-targeted prediction head (MoleBLEND eq. 3).

    .. math::
        o_{ij} = G(W_l x_i) \otimes G(W_r x_j), \qquad
        z_{ij} = W_{head} \, \mathrm{Flatten}(o_{ij}) + b, \qquad
        G = \mathrm{LayerNorm} \circ \mathrm{GELU}

    with :math:`W_l, W_r \in \mathbb{R}^{m \times C}` and
    :math:`W_{head} \in \mathbb{R}^{c \times m^2}` (flat index :math:`m a + b`, :math:`a`
    from atom :math:`i`). It is evaluated as the bilinear form
    :math:`z_{ijo} = \sum_{ab} r_{ia} W_{oab} c_{jb} + b_o`, one batched matrix product,
    so the ``[B, N, N, m^2]`` outer product is never materialised.

    Args:
        channels (int): atom state size :math:`C`.
        out_channels (int): number of outputs :math:`c` per pair.
        hidden_channels (int, optional): :math:`m`. (default: :obj:`32`)

    Shapes:
        - **input:** ``[B, N, C]``
        - **output:** ``[B, N, N, c]``

    Examples:
        >>> head = PairHead(channels=16, out_channels=3, hidden_channels=4)
        >>> head(torch.randn(2, 5, 16)).shape  # one output vector per ordered atom pair
        torch.Size([2, 5, 5, 3])
    """

    #: Largest fp32 logits block :meth:`cross_entropy` makes at once, in bytes.
    block_bytes: int = BLOCK_BYTES

    def __init__(self, channels: int, out_channels: int, hidden_channels: int = 32) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        self.row = nn.Linear(channels, hidden_channels)
        self.col = nn.Linear(channels, hidden_channels)
        self.row_norm = nn.LayerNorm(hidden_channels, eps=1e-12)
        self.col_norm = nn.LayerNorm(hidden_channels, eps=1e-12)
        self.head = nn.Linear(hidden_channels * hidden_channels, out_channels)

    def reset_parameters(self) -> None:
        for module in self.children():
            module.reset_parameters()

    def factors(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Row and column factors :math:`G(W_l x)`, :math:`G(W_r x)`, each ``[B, N, m]``."""
        return self.row_norm(F.gelu(self.row(x))), self.col_norm(F.gelu(self.col(x)))

    def forward(self, x: Tensor) -> Tensor:
        row, col = self.factors(x)
        m, c = self.hidden_channels, self.out_channels
        batch, num_nodes, _ = row.shape
        # right[b, j, o, a] = sum_k W[o, a, k] col[b, j, k]: one [B N, m] x [m, c m] product.
        weight = self.head.weight.view(c, m, m).permute(2, 0, 1).reshape(m, c * m)
        right = (col.reshape(-1, m) @ weight).view(batch, num_nodes * c, m)
        # [B, N (i), m] x [B, m, N (j) c] -> [B, N, N, c], channels last: B products of
        # N x m x N c instead of the B N products of N x m x c of a broadcast matmul.
        logits = torch.bmm(row, right.transpose(1, 2)).view(batch, num_nodes, num_nodes, c)
        return logits + self.head.bias

    def cross_entropy(
        self, x: Tensor, labels: Tensor, num_classes: int | Sequence[int]
    ) -> tuple[Tensor | None, Tensor | None]:
        r"""Mean cross-entropy and accuracy of the pair logits over the labelled entries.

        With an integer ``num_classes`` :math:`C`, ``labels`` ``[B, N, N, G]`` holds class
        indices in ``[0, C)`` or :data:`~pyg_molblend.constants.IGNORE_INDEX`, and group
        :math:`g` is scored by outputs :math:`g C` to :math:`(g + 1) C - 1`. With a
        sequence of sizes :math:`(C_1, \dots, C_S)` each group is :math:`S` independent
        softmaxes side by side (a factored class: the edge head's (bond type, conjugated)
        pair and stereo label), ``labels`` is ``[B, N, N, G, S]``, an entry's loss is the sum of its
        :math:`S` cross-entropies, and it is correct when all :math:`S` are; an entry is
        labelled in all its parts or in none.

        Equal to ``cross_entropy`` over ``self(x)`` viewed as ``[B, N, N, G, C]`` (summed
        over the parts), but computed one group at a time (each block is made, scored and
        freed before the next: the edge head's five blocks instead of one ``[B, N, N,
        5 C]`` tensor, 2.3x faster on the CPU) and class-major, ``[B, C, N, N]``, by
        :class:`PairCrossEntropy`. A block whose fp32 logits would pass
        :attr:`block_bytes` is scored a few molecules at a time, so that glibc serves it
        from its heap (below 32 MiB) instead of mapping and faulting in fresh pages every
        step (see :func:`~pyg_molblend.training.utils.tune_malloc`): a ``small``
        pretraining step on 64 ChEMBL molecules of 41-86 atoms, one thread: 1.53-1.68
        against 1.88-2.05 s, 49-92k against 192-229k page faults (1.31-1.42 s with
        :class:`~pyg_molblend.nn.GaussianDistanceBias` and :class:`DenoiseHead` split
        too). :obj:`None` for both when nothing is labelled.
        """
        sizes = (num_classes,) if isinstance(num_classes, int) else tuple(num_classes)
        factored = not isinstance(num_classes, int)
        if factored and (labels.dim() != 5 or labels.size(-1) != len(sizes)):
            raise ValueError(
                f"{len(sizes)} class sizes {sizes} need labels [B, N, N, G, {len(sizes)}], "
                f"got {list(labels.shape)}"
            )
        width, groups = sum(sizes), labels.size(3)
        if groups * width > self.out_channels:
            raise ValueError(
                f"{groups} groups of {width} classes need {groups * width} outputs, the "
                f"head has {self.out_channels}"
            )
        labelled = labels != IGNORE_INDEX
        count = (labelled.any(-1) if factored else labelled).sum()
        if not bool(count):
            return None, None
        row, col = self.factors(x)
        m, (batch, num_nodes, _) = self.hidden_channels, row.shape
        per_chunk = batch_chunk(batch, 4 * width * num_nodes**2, self.block_bytes)
        total = correct = labels.new_zeros((), dtype=torch.float)
        for group in range(groups):
            start, stop = group * width, (group + 1) * width
            # left[b, o, i, k] = sum_a row[b, i, a] W[o, a, k]: one [B N, m] x [m, C m]
            # product, then class-major (a copy a fraction of the logits' size).
            weight = self.head.weight[start:stop].view(width, m, m)
            weight = weight.permute(1, 0, 2).reshape(m, width * m)
            for first in range(0, batch, per_chunk):
                rows = row[first : first + per_chunk]
                left = (rows.reshape(-1, m) @ weight).view(-1, num_nodes, width, m)
                loss, hits = PairCrossEntropy.apply(
                    left.transpose(1, 2),
                    col[first : first + per_chunk],
                    self.head.bias[start:stop],
                    labels[first : first + per_chunk, :, :, group],
                    sizes if factored else None,
                )
                total, correct = total + loss, correct + hits
        return total / count, correct / count

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.row.in_features}, {self.out_channels}, "
            f"hidden_channels={self.hidden_channels})"
        )


class PairCrossEntropy(torch.autograd.Function):
    r"""Summed cross-entropy, and number of correct predictions, of pair logits
    :math:`z_{boij} = \sum_k L_{boik} c_{bjk} + \beta_o` (:class:`PairHead`'s bilinear
    form, one block of classes) against ``target`` ``[B, N, N]`` (class indices or
    :data:`~pyg_molblend.constants.IGNORE_INDEX`), in one pass over class-major logits
    ``[B, C, N, N]``.

    Equal to ``F.cross_entropy(z, target, ignore_index=IGNORE_INDEX, reduction="sum")``
    and to counting the labelled entries whose target logit is the largest (a tie
    counts), with the same gradients for :math:`L`, :math:`c` and :math:`\beta`. Class-major
    logits make the maximum over classes a reduction over an outer dimension, which the
    CPU vectorises (0.35 against 2.5 ms for 64 x 26 x 26 rows of 60 on one AVX2 core), and
    the backward pass reuses the forward's exponentials instead of a log-softmax backward.
    The edge head's five 60-class blocks for 64 molecules of 26 atoms (13M logits),
    forward + backward on that core: 106 against 149 ms with ``F.cross_entropy`` over
    channels-last logits. The logits exist only inside, never for autograd.

    With ``sizes`` :math:`(C_1, \dots, C_S)` (summing to :math:`C`) the block is
    :math:`S` softmaxes over consecutive classes, ``target`` is ``[B, N, N, S]`` (each
    part's index within its own classes), the loss is the sum of the parts' losses, and
    an entry counts as correct when every part is.

    Args (of :meth:`apply`):
        left: ``[B, C, N, m]``; col: ``[B, N, m]``; bias: ``[C]``; target: ``[B, N, N]``,
        or ``[B, N, N, S]`` with sizes; sizes: :obj:`None` (one softmax) or the parts'
        class counts.

    Returns:
        the summed loss (a differentiable scalar) and the count of correct entries.

    Examples:
        >>> left, col = torch.randn(2, 3, 4, 5), torch.randn(2, 4, 5)
        >>> bias, target = torch.zeros(3), torch.randint(0, 3, (2, 4, 4))
        >>> loss, correct = PairCrossEntropy.apply(left, col, bias, target)
        >>> logits = torch.einsum("boik,bjk->boij", left, col)
        >>> bool(torch.isclose(loss, F.cross_entropy(logits, target, reduction="sum")))
        True
        >>> correct.item() == (logits.argmax(1) == target).sum().item()
        True
        >>> parts = torch.stack([target.clamp(max=1), torch.zeros_like(target)], -1)
        >>> loss, _ = PairCrossEntropy.apply(left, col, bias, parts, (2, 1))  # 2 + 1 classes
        >>> expected = F.cross_entropy(logits[:, :2], parts[..., 0], reduction="sum")
        >>> bool(torch.isclose(loss, expected))  # a one-class part costs nothing
        True
    """

    @staticmethod
    def forward(ctx, left, col, bias, target, sizes=None):  # type: ignore[override]
        batch, classes, num_nodes, m = left.shape
        left = left.contiguous()
        logits = torch.bmm(left.view(batch, classes * num_nodes, m), col.transpose(1, 2))
        logits = logits.view(batch, classes, num_nodes, num_nodes)
        if logits.dtype in (torch.float16, torch.bfloat16):  # autocast: score in fp32
            logits = logits.float()
        logits.add_(bias.view(1, classes, 1, 1).to(logits.dtype))
        if sizes is None:
            sizes, target = (classes,), target.unsqueeze(1)
        else:
            target = target.permute(0, 3, 1, 2)
        starts = [sum(sizes[:part]) for part in range(len(sizes))]
        labelled = target != IGNORE_INDEX  # [B, S, N, N]
        index = target.clamp(min=0)
        for part in range(1, len(sizes)):  # each part's index among the block's classes
            index[:, part] += starts[part]  # (a Python offset: no host-to-device copy)
        hit = logits.gather(1, index)
        tops, norms = [], []
        for start, size in zip(starts, sizes, strict=True):
            part = logits[:, start : start + size]
            top = part.amax(1, keepdim=True)
            exp = part.sub_(top).exp_()  # the logits are not needed after this
            tops.append(top)
            norms.append(exp.sum(1, keepdim=True))
        top, norm = torch.cat(tops, 1), torch.cat(norms, 1)
        loss = ((norm.log() + top - hit) * labelled).sum()
        correct = (((hit >= top) | ~labelled).all(1) & labelled.any(1)).sum()
        ctx.sizes = (starts, sizes)
        ctx.save_for_backward(left, col, logits, norm, index, labelled)
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):  # type: ignore[override]
        left, col, exp, norm, index, labelled = ctx.saved_tensors
        batch, classes, num_nodes, m = left.shape
        weight = grad_loss * labelled
        # softmax - one-hot, times the incoming gradient (a new tensor: the saved
        # exponentials serve a second backward pass through the graph too).
        scale = weight / norm
        grad = torch.empty_like(exp)
        for part, (start, size) in enumerate(zip(*ctx.sizes, strict=True)):
            stop = start + size
            torch.mul(exp[:, start:stop], scale[:, part : part + 1], out=grad[:, start:stop])
        grad.scatter_add_(1, index, -weight)
        flat = grad.view(batch, classes * num_nodes, num_nodes)
        grad_left = torch.bmm(flat.to(col.dtype), col).view(left.shape).to(left.dtype)
        grad_col = torch.bmm(flat.transpose(1, 2).to(left.dtype), left.view(batch, -1, m))
        grad_bias = grad.sum((0, 2, 3))
        return grad_left, grad_col.to(col.dtype), grad_bias, None, None


class DenoiseHead(nn.Module):
    r"""Predicts the noise added to each atom's position (Transformer-M's ``AtomTaskHead``).

    .. math::
        P^h = \mathrm{softmax}\Big(\frac{Q^h K^{h\top}}{\sqrt{d}} + \Psi^h\Big), \qquad
        \hat\epsilon_i^c = w_c^\top \big\Vert_h \sum_j P^h_{ij} \, u^c_{ij} \, V^h_j + b_c

    with :math:`u_{ij} = (p_j - p_i) / (\lVert p_j - p_i \rVert + 10^{-5})` from the noisy
    positions and :math:`\Psi` the encoder's atom-block attention bias. A batch whose
    ``[B, H, 3, N, N]`` product would pass :attr:`block_bytes` is computed a few molecules
    at a time (see :func:`~pyg_molblend.nn.layer.batch_chunk`): the same output, except
    that in training the attention dropout draws its mask chunk by chunk.

    Shapes:
        - **input:** ``x`` ``[B, N, C]``, ``attn_bias`` ``[B, H, N, N]``, ``delta``
          ``[B, N, N, 3]`` (:math:`p_j - p_i`), ``mask`` ``[B, N]``
        - **output:** ``[B, N, 3]``

    Examples:
        >>> head = DenoiseHead(channels=16, heads=4).eval()
        >>> pos = torch.randn(1, 3, 3)
        >>> delta = pos.unsqueeze(1) - pos.unsqueeze(2)
        >>> mask = torch.ones(1, 3, dtype=torch.bool)
        >>> out = head(torch.randn(1, 3, 16), torch.zeros(1, 4, 3, 3), delta, mask)
        >>> out.shape  # one 3D vector per atom
        torch.Size([1, 3, 3])
    """

    #: Largest fp32 ``[B, H, 3, N, N]`` block made at once, in bytes.
    block_bytes: int = BLOCK_BYTES

    def __init__(self, channels: int, heads: int, attn_dropout: float = 0.1) -> None:
        super().__init__()
        if channels % heads != 0:
            raise ValueError(f"heads ({heads}) must divide channels ({channels})")
        self.heads = heads
        self.q_proj = nn.Linear(channels, channels)
        self.k_proj = nn.Linear(channels, channels)
        self.v_proj = nn.Linear(channels, channels)
        self.dropout = Dropout(attn_dropout)
        self.axis_weight = nn.Parameter(torch.empty(3, channels))
        self.axis_bias = nn.Parameter(torch.empty(3))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            proj.reset_parameters()
        bound = 1.0 / math.sqrt(self.axis_weight.size(1))
        nn.init.uniform_(self.axis_weight, -bound, bound)
        nn.init.zeros_(self.axis_bias)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.q_proj.in_features}, heads={self.heads}, "
            f"attn_dropout={self.dropout.p})"
        )

    def forward(self, x: Tensor, attn_bias: Tensor, delta: Tensor, mask: Tensor) -> Tensor:
        # A few molecules at a time when the [B, H, 3, N, N] product would pass
        # block_bytes (59 MB for 64 molecules of 86 atoms), as PairHead's loss does.
        size = 4 * self.heads * 3 * x.size(1) ** 2
        return in_batch_chunks(self._forward, (x, attn_bias, delta, mask), size, self.block_bytes)

    def _forward(self, x: Tensor, attn_bias: Tensor, delta: Tensor, mask: Tensor) -> Tensor:
        batch, num_nodes, channels = x.shape
        head_dim = channels // self.heads

        def split(t: Tensor) -> Tensor:
            return t.view(batch, num_nodes, self.heads, head_dim).transpose(1, 2)

        q = split(self.q_proj(x)) / math.sqrt(head_dim)
        k, v = split(self.k_proj(x)), split(self.v_proj(x))
        logits = q @ k.transpose(-1, -2) + attn_bias + key_padding_bias(mask, q.dtype)
        prob = torch.softmax(pad_softmax_rows(logits.float()), dim=-1)[..., :num_nodes]
        prob = self.dropout(prob.nan_to_num(0.0).to(x.dtype))
        unit = delta / (delta.norm(dim=-1, keepdim=True) + 1e-5)
        # [B, H, N, N] x [B, N, N, 3] -> [B, H, 3, N, N], then times V -> [B, H, 3, N, d]
        weighted = prob.unsqueeze(2) * unit.permute(0, 3, 1, 2).unsqueeze(1)
        out = (
            (weighted @ v.unsqueeze(2))
            .permute(0, 3, 2, 1, 4)
            .reshape(batch, num_nodes, 3, channels)
        )
        return (out * self.axis_weight).sum(-1) + self.axis_bias
