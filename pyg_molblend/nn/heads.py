"""Pretraining heads: modality-targeted pair heads (eq. 3) and the 3D denoising head."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyg_molblend.nn.dropout import Dropout
from pyg_molblend.nn.layer import key_padding_bias

__all__ = ["DenoiseHead", "PairHead"]


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
    """

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
        batch, num_nodes, _ = x.shape
        m, c = self.hidden_channels, self.out_channels
        row, col = self.factors(x)
        weight = self.head.weight.view(c, m, m)
        left = torch.einsum("nia,oac->nioc", row, weight).reshape(batch, num_nodes * c, m)
        out = torch.bmm(left, col.transpose(1, 2)).view(batch, num_nodes, c, num_nodes)
        return out.transpose(2, 3) + self.head.bias

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.row.in_features}, {self.out_channels}, "
            f"hidden_channels={self.hidden_channels})"
        )


class DenoiseHead(nn.Module):
    r"""Predicts the noise added to each atom's position (Transformer-M's ``AtomTaskHead``).

    .. math::
        P^h = \mathrm{softmax}\Big(\frac{Q^h K^{h\top}}{\sqrt{d}} + \Psi^h\Big), \qquad
        \hat\epsilon_i^c = w_c^\top \big\Vert_h \sum_j P^h_{ij} \, u^c_{ij} \, V^h_j + b_c

    with :math:`u_{ij} = (p_j - p_i) / (\lVert p_j - p_i \rVert + 10^{-5})` from the noisy
    positions and :math:`\Psi` the encoder's atom-block attention bias.

    Shapes:
        - **input:** ``x`` ``[B, N, C]``, ``attn_bias`` ``[B, H, N, N]``, ``delta``
          ``[B, N, N, 3]`` (:math:`p_j - p_i`), ``mask`` ``[B, N]``
        - **output:** ``[B, N, 3]``
    """

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

    def forward(self, x: Tensor, attn_bias: Tensor, delta: Tensor, mask: Tensor) -> Tensor:
        batch, num_nodes, channels = x.shape
        head_dim = channels // self.heads

        def split(t: Tensor) -> Tensor:
            return t.view(batch, num_nodes, self.heads, head_dim).transpose(1, 2)

        q = split(self.q_proj(x)) / math.sqrt(head_dim)
        k, v = split(self.k_proj(x)), split(self.v_proj(x))
        logits = q @ k.transpose(-1, -2) + attn_bias + key_padding_bias(mask, q.dtype)
        prob = self.dropout(torch.softmax(logits.float(), dim=-1).nan_to_num(0.0).to(x.dtype))
        unit = delta / (delta.norm(dim=-1, keepdim=True) + 1e-5)
        # [B, H, N, N] x [B, N, N, 3] -> [B, H, 3, N, N], then times V -> [B, H, 3, N, d]
        weighted = prob.unsqueeze(2) * unit.permute(0, 3, 1, 2).unsqueeze(1)
        out = (
            (weighted @ v.unsqueeze(2))
            .permute(0, 3, 2, 1, 4)
            .reshape(batch, num_nodes, 3, channels)
        )
        return (out * self.axis_weight).sum(-1) + self.axis_bias
