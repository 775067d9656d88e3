"""Pairwise Euclidean distances."""

from __future__ import annotations

from torch import Tensor

__all__ = ["pairwise_distance"]


def pairwise_distance(pos: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Euclidean distance :math:`\lVert p_j - p_i \rVert` between all atom pairs.

    Computed as the norm of explicit differences (not :func:`torch.cdist`, whose
    matrix-product shortcut loses precision and changes with the batch size), so a
    molecule gets bit-identical distances alone or inside a padded batch.

    Args:
        pos (Tensor): ``[..., N, 3]`` coordinates in Angstrom.
        mask (Tensor, optional): ``[..., N]`` True for real atoms; pairs with a padded
            atom get distance 0.

    Returns:
        ``[..., N, N]`` distances in Angstrom.

    Examples:
        >>> pos = torch.tensor([[[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]]])
        >>> pairwise_distance(pos).tolist()
        [[[0.0, 5.0], [5.0, 0.0]]]
    """
    if pos.size(-1) != 3:
        raise ValueError(
            f"pos must have 3 coordinates in its last dimension, got {tuple(pos.shape)}"
        )
    dist = (pos.unsqueeze(-2) - pos.unsqueeze(-3)).norm(dim=-1)
    if mask is not None:
        pair_mask = mask.unsqueeze(-1) & mask.unsqueeze(-2)
        dist = dist.masked_fill(~pair_mask, 0.0)
    return dist
