r"""Modality blending (MoleBLEND eq. 1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["DIST", "EDGE", "MODES", "SPD", "BlendResult", "ModalityBlend"]

#: Encoding modes: ``"blend"`` (pretraining), ``"2d"``, ``"3d"``, ``"2d+3d"``.
MODES = ("blend", "2d", "3d", "2d+3d")

#: Relation ids in :attr:`BlendResult.pair_choice`.
SPD, EDGE, DIST = 0, 1, 2


@dataclass
class BlendResult:
    """Output of :class:`ModalityBlend`.

    Attributes:
        bias: ``[B, H, N, N]`` the atom block of the attention bias.
        node: ``[B, N, C]`` the node extra (degree and/or merged 3D feature).
        pair_choice: ``[B, N, N]`` relation each pair took (:obj:`SPD`, :obj:`EDGE`,
            :obj:`DIST`) in ``"blend"`` mode, else :obj:`None`.
        atom_3d: ``[B, N]`` True where an atom took the 3D node feature.
        fallback: ``[B]`` True for molecules that lacked 3D coordinates and were encoded
            with their 2D relations instead (every mode but ``"2d"``).

    Examples:
        >>> blend = ModalityBlend(ratio=(2, 2, 6))
        >>> bias = torch.zeros(1, 4, 3, 3)
        >>> mask = torch.ones(1, 3, dtype=torch.bool)
        >>> result = blend("2d", bias, bias, None, torch.zeros(1, 3, 8), None,
        ...                torch.tensor([False]), mask)
        >>> result.bias.shape, result.node.shape
        (torch.Size([1, 4, 3, 3]), torch.Size([1, 3, 8]))
    """

    bias: Tensor
    node: Tensor
    pair_choice: Tensor | None
    atom_3d: Tensor
    fallback: Tensor

    @property
    def num_fallback(self) -> int:
        return int(self.fallback.sum())


class ModalityBlend(nn.Module):
    r"""Combines the relation biases of one batch according to a mode.

    With :math:`\Psi_{SPD}, \Psi_{Edge}, \Psi_{Distance} \in \mathbb{R}^{B \times H
    \times N \times N}`:

    * ``"2d"``: :math:`\Psi_{SPD} + \Psi_{Edge}`, node extra = degree embedding
      (3D inputs are never read);
    * ``"3d"``: :math:`\Psi_{Distance}`, node extra = :math:`0.01 \cdot` merged 3D feature;
    * ``"2d+3d"`` (eq. 5): the sum of all three, node extra = degree + :math:`0.01 \cdot` 3D;
    * ``"blend"`` (eq. 1): every ordered pair :math:`(i, j)` draws
      :math:`s_{ij} \sim \mathrm{Categorical}(p_{SPD}, p_{Edge}, p_{Distance})` and takes
      :math:`\Psi_{s_{ij}}^{ij}` alone, the same choice for all heads and layers; every
      atom draws the degree embedding (probability :obj:`atom_2d_prob`) or the 3D feature.

    Molecules without coordinates (``has_pos`` False) are encoded with their 2D
    relations in every mode, never with zeros, and reported in :attr:`BlendResult.fallback`.

    Deliberate differences from the reference: by default each molecule draws its own
    pair choices (the reference draws one :math:`N \times N` matrix per batch, shared by
    all molecules, so a padded atom slot's choice couples unrelated molecules);
    ``per_molecule=False`` restores that. The ratio is given as numbers, not parsed
    from a string.

    Args:
        ratio (tuple, optional): SPD : edge : 3D weights. (default: :obj:`(2, 2, 6)`)
        atom_2d_prob (float, optional): probability of the degree node feature in
            ``"blend"`` mode. (default: :obj:`0.4`)
        per_molecule (bool, optional): one choice matrix per molecule.
            (default: :obj:`True`)
        merged_scale (float, optional): scale of the merged 3D node feature.
            (default: :obj:`0.01`)

    Examples:
        >>> blend = ModalityBlend(ratio=(2, 2, 6))
        >>> spd, edge = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
        >>> dist, nodes = 2 * torch.ones(1, 1, 4, 4), torch.zeros(1, 4, 8)
        >>> mask, has_pos = torch.ones(1, 4, dtype=torch.bool), torch.tensor([True])
        >>> gen = torch.Generator().manual_seed(0)
        >>> out = blend("blend", spd, edge, dist, nodes, nodes, has_pos, mask, gen)
        >>> bool((out.bias[0, 0] == out.pair_choice[0]).all())  # each pair: one relation
        True
    """

    def __init__(
        self,
        ratio: tuple[float, float, float] = (2.0, 2.0, 6.0),
        atom_2d_prob: float = 0.4,
        per_molecule: bool = True,
        merged_scale: float = 0.01,
    ) -> None:
        super().__init__()
        if len(ratio) != 3 or any(float(r) < 0 for r in ratio) or sum(ratio) <= 0:
            raise ValueError(
                f"ratio must be three non-negative numbers with a positive sum, got {ratio}"
            )
        if not 0.0 <= atom_2d_prob <= 1.0:
            raise ValueError(f"atom_2d_prob must be in [0, 1], got {atom_2d_prob}")
        total = float(sum(ratio))
        self.ratio = tuple(float(r) for r in ratio)
        self.cumulative = (ratio[0] / total, (ratio[0] + ratio[1]) / total)
        self.atom_2d_prob = atom_2d_prob
        self.per_molecule = per_molecule
        self.merged_scale = merged_scale

    def config(self) -> dict[str, Any]:
        """Constructor arguments, to rebuild the module."""
        return dict(
            ratio=self.ratio,
            atom_2d_prob=self.atom_2d_prob,
            per_molecule=self.per_molecule,
            merged_scale=self.merged_scale,
        )

    def forward(
        self,
        mode: str,
        spd: Tensor | None,
        edge: Tensor | None,
        dist: Tensor | None,
        degree: Tensor | None,
        atom_3d: Tensor | None,
        has_pos: Tensor,
        mask: Tensor,
        generator: torch.Generator | None = None,
    ) -> BlendResult:
        r"""Combine relation biases ``[B, H, N, N]`` and node features ``[B, N, C]``.

        Args:
            mode (str): one of :obj:`MODES`.
            spd (Tensor, optional): :math:`\Psi_{SPD}` ``[B, H, N, N]``.
            edge (Tensor, optional): :math:`\Psi_{Edge}` ``[B, H, N, N]``.
            dist (Tensor, optional): :math:`\Psi_{Distance}` ``[B, H, N, N]``.
            degree (Tensor, optional): degree embedding ``[B, N, C]``.
            atom_3d (Tensor, optional): merged 3D atom feature ``[B, N, C]``.
            has_pos (Tensor): ``[B]`` True for molecules with coordinates.
            mask (Tensor): ``[B, N]`` True for real atoms.
            generator (torch.Generator, optional): source of the ``"blend"`` draws.

        ``spd``/``edge``/``degree`` may be :obj:`None` only in ``"3d"`` mode when every
        molecule has coordinates; ``dist``/``atom_3d`` only when none has.

        Examples:
            >>> spd, edge = torch.ones(1, 2, 3, 3), 2 * torch.ones(1, 2, 3, 3)
            >>> degree, mask = torch.ones(1, 3, 4), torch.tensor([[True, True, False]])
            >>> has_pos = torch.tensor([False])  # no coordinates: 2D in every mode
            >>> out = ModalityBlend()("3d", spd, edge, None, degree, None, has_pos, mask)
            >>> out.bias.unique().tolist(), out.num_fallback, out.node[0, :, 0].tolist()
            ([3.0], 1, [1.0, 1.0, 0.0])
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        batch_size, num_nodes = mask.shape
        use_3d = has_pos if mode != "2d" else torch.zeros_like(has_pos)
        fallback = ~has_pos if mode != "2d" else torch.zeros_like(has_pos)
        missing_2d = spd is None or edge is None or degree is None
        # "2d" decides without reading a tensor (no device synchronisation).
        if mode == "2d" and missing_2d:
            raise ValueError("mode '2d' needs the 2D relations")
        if mode != "2d" and (dist is None or atom_3d is None) and bool(use_3d.any()):
            raise ValueError(f"mode {mode!r} needs the 3D relation for molecules with has_pos")
        if mode != "2d" and missing_2d and bool((~use_3d).any()):
            raise ValueError(f"mode {mode!r} needs the 2D relations for molecules without 3D")
        mol_3d = use_3d.view(-1, 1, 1, 1)

        pair_choice = None
        node_3d = torch.zeros_like(mask)
        if mode == "blend":
            shape = (batch_size if self.per_molecule else 1, num_nodes, num_nodes)
            draw = torch.rand(shape, generator=generator, device=mask.device)
            pair_choice = (draw >= self.cumulative[0]).long() + (draw >= self.cumulative[1]).long()
            pair_choice = pair_choice.expand(batch_size, -1, -1)
            node_draw = torch.rand((batch_size, num_nodes), generator=generator, device=mask.device)
            node_3d = (node_draw >= self.atom_2d_prob) & mask & use_3d.view(-1, 1)
        elif mode in ("3d", "2d+3d"):
            node_3d = mask & use_3d.view(-1, 1)

        two_d = None if spd is None else spd + edge
        if mode == "2d" or dist is None:
            bias = two_d
        elif two_d is None:
            bias = dist
        elif mode == "3d":
            bias = torch.where(mol_3d, dist, two_d)
        elif mode == "2d+3d":
            bias = torch.where(mol_3d, two_d + dist, two_d)
        else:
            choice = pair_choice.unsqueeze(1)
            blended = torch.where(choice == SPD, spd, torch.where(choice == EDGE, edge, dist))
            bias = torch.where(mol_3d, blended, two_d)

        # Degree for every atom in "2d+3d"; elsewhere for atoms without the 3D feature.
        keep_degree = mask if mode == "2d+3d" else mask & ~node_3d
        node = 0.0
        if degree is not None:
            node = degree * keep_degree.unsqueeze(-1)
        if atom_3d is not None:
            node = node + self.merged_scale * atom_3d * node_3d.unsqueeze(-1)
        return BlendResult(bias, node, pair_choice, node_3d, fallback & mask.any(-1))

    def extra_repr(self) -> str:
        return (
            f"ratio={self.ratio}, atom_2d_prob={self.atom_2d_prob}, "
            f"per_molecule={self.per_molecule}"
        )
