"""The losses of MoleBLEND and of fine-tuning, and the labels they score.

Pretraining (:meth:`~pyg_molblend.models.MoleBlend.pretrain_loss`) sums four terms:
:func:`spd_loss` and :func:`edge_loss` (the 2D relations of every atom pair, eq. 3),
:func:`direction_loss` (the 3D relation) and :func:`denoise_loss` (the noise added to the
coordinates). Fine-tuning (:class:`~pyg_molblend.models.MoleBlendPredictor`) uses
:func:`masked_bce_loss`, :func:`masked_cross_entropy_loss` or :func:`masked_mse_loss`.
Terms without data return :obj:`None` (pretraining) or 0 (fine-tuning), never NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pyg_molblend.constants import BOND_FEATURE_DIMS, IGNORE_INDEX, SPD_UNREACHABLE
from pyg_molblend.data.dense import DenseMolBatch
from pyg_molblend.nn import PairHead

__all__ = [
    "EDGE_TARGETS",
    "NUM_EDGE_CLASSES",
    "NUM_SPD_CLASSES",
    "PretrainLoss",
    "denoise_loss",
    "direction_loss",
    "edge_classes",
    "edge_labels",
    "edge_loss",
    "masked_bce_loss",
    "masked_cross_entropy_loss",
    "masked_mse_loss",
    "spd_labels",
    "spd_loss",
]

#: SPD classes of the SPD head: distances 1..10 are classes 0..9, everything farther 10.
NUM_SPD_CLASSES = 11

#: Edge classes per hop of the ``"joint"`` edge target: every (type, stereo, conjugated)
#: triple of the OGB vocabulary, 5 * 6 * 2 = 60, so no two bond kinds alias (the
#: reference's 24 classes can).
NUM_EDGE_CLASSES = BOND_FEATURE_DIMS[0] * BOND_FEATURE_DIMS[1] * BOND_FEATURE_DIMS[2]

#: How the edge head scores a hop's bond (:class:`~pyg_molblend.models.MoleBlend`'s
#: ``edge_target``): ``"factored"``, two softmaxes, over the bond's (type, conjugated)
#: pair and over its stereo label (10 + 6 = 16 outputs a hop; the loss is the sum of the
#: two cross-entropies), or ``"joint"``, one softmax over the 60 triples (pretraining
#: checkpoints written before the option). Both are ln 60 at a uniform prediction, and
#: both count a hop correct when its whole triple is. Type and conjugation stay joint
#: because they depend on each other (aromatic bonds are conjugated): scored as three
#: independent softmaxes, 600 steps on 3,000 ZINC molecules reached an edge accuracy of
#: 0.596 against the joint head's 0.629, with the better accuracy on type and
#: conjugation alone; the two-part head reached 0.628.
EDGE_TARGETS = ("factored", "joint")


def edge_classes(target: str) -> int | tuple[int, ...]:
    """The class sizes the edge head scores per hop under an edge target: one size
    (``"joint"``) or one per part (``"factored"``: (type, conjugated), stereo).

    Examples:
        >>> edge_classes("factored"), edge_classes("joint")
        ((10, 6), 60)
    """
    types, stereo, conj = BOND_FEATURE_DIMS
    if target == "factored":
        return (types * conj, stereo)
    if target == "joint":
        return NUM_EDGE_CLASSES
    raise ValueError(f"edge_target must be one of {EDGE_TARGETS}, got {target!r}")


@dataclass
class PretrainLoss:
    """What :meth:`~pyg_molblend.models.MoleBlend.pretrain_loss` returns.

    Attributes:
        loss: the weighted sum of the terms present, to call ``backward()`` on.
        spd, edge, direction, denoise: the detached terms (:func:`spd_loss`,
            :func:`edge_loss`, :func:`direction_loss`, :func:`denoise_loss`), :obj:`None`
            where the batch has no data for one.
        spd_acc, edge_acc: accuracies of the SPD and edge classes (diagnostics).
        num_fallback: ``[]`` molecules encoded in 2D for lack of coordinates.

    Examples:
        >>> from torch_geometric.data import Batch
        >>> from pyg_molblend.data import from_smiles
        >>> from pyg_molblend.models import MoleBlend
        >>> batch = Batch.from_data_list([from_smiles("CCO")])
        >>> out = MoleBlend.from_preset("small").pretrain_loss(batch)
        >>> out.loss.backward()
        >>> sorted(k for k, v in out.parts.items() if v is None)  # no coordinates: no 3D terms
        ['3d', 'denoise']
    """

    loss: Tensor
    spd: Tensor | None
    edge: Tensor | None
    direction: Tensor | None
    denoise: Tensor | None
    spd_acc: Tensor | None
    edge_acc: Tensor | None
    num_fallback: Tensor

    @property
    def parts(self) -> dict[str, Tensor | None]:
        """Everything but :attr:`loss`, by the names of the pretraining log (the
        direction term is ``"3d"``)."""
        return {
            "spd_acc": self.spd_acc,
            "edge_acc": self.edge_acc,
            "spd": self.spd,
            "edge": self.edge,
            "3d": self.direction,
            "denoise": self.denoise,
            "num_fallback": self.num_fallback,
        }


def spd_labels(spd: Tensor, pair_mask: Tensor) -> Tensor:
    """SPD class per pair: distance 1..10 -> 0..9, 11 and more -> 10;
    :data:`~pyg_molblend.constants.IGNORE_INDEX` for self pairs, padding and pairs in
    different fragments.

    Examples:
        >>> spd = torch.tensor([[[0, 1, 12], [1, 0, 255], [12, 255, 0]]])
        >>> spd_labels(spd, torch.ones(1, 3, 3, dtype=torch.bool)).tolist()
        [[[-100, 0, 10], [0, -100, -100], [10, -100, -100]]]
    """
    labels = (spd - 1).clamp(max=NUM_SPD_CLASSES - 1)
    ignore = ~pair_mask | (spd <= 0) | (spd == SPD_UNREACHABLE)
    return labels.masked_fill(ignore, IGNORE_INDEX)


def edge_labels(path_edge: Tensor, edge_attr: Tensor, target: str = "factored") -> Tensor:
    """The bond at each path hop: ``[..., K, 2]``, its class ``type * 2 + conjugated`` of
    10 and its stereo label of 6 (``"factored"``), or ``[..., K]``, its class ``type * 12 +
    stereo * 2 + conjugated`` of 60 (``"joint"``);
    :data:`~pyg_molblend.constants.IGNORE_INDEX` where the hop has no bond.

    Examples:
        >>> edge_attr = torch.tensor([[1, 0, 1], [0, 0, 0]])  # conjugated double, plain single
        >>> edge_labels(torch.tensor([[0, 1, -1]]), edge_attr).tolist()
        [[[3, 0], [0, 0], [-100, -100]]]
        >>> edge_labels(torch.tensor([[0, 1, -1]]), edge_attr, "joint").tolist()
        [[13, 0, -100]]
    """
    stereo, conj = BOND_FEATURE_DIMS[1], BOND_FEATURE_DIMS[2]
    if isinstance(edge_classes(target), int):  # "joint" (edge_classes checks the name)
        per_edge = (edge_attr[:, 0] * stereo + edge_attr[:, 1]) * conj + edge_attr[:, 2]
    else:
        per_edge = torch.stack([edge_attr[:, 0] * conj + edge_attr[:, 2], edge_attr[:, 1]], 1)
    per_edge = torch.cat([per_edge.new_full((1, *per_edge.shape[1:]), IGNORE_INDEX), per_edge])
    return per_edge[path_edge + 1]


def spd_loss(
    head: PairHead, node: Tensor, dense: DenseMolBatch
) -> tuple[Tensor | None, Tensor | None]:
    """Cross-entropy and accuracy of the SPD class of every real pair :math:`i \\ne j` in
    one fragment.

    Examples:
        >>> from torch_geometric.data import Batch
        >>> from pyg_molblend.data import from_smiles, to_dense
        >>> from pyg_molblend.nn import PairHead
        >>> dense = to_dense(Batch.from_data_list([from_smiles("CCO")]))
        >>> loss, accuracy = spd_loss(PairHead(16, NUM_SPD_CLASSES), torch.randn(1, 3, 16), dense)
        >>> loss.shape, 0.0 <= accuracy.item() <= 1.0
        (torch.Size([]), True)
    """
    labels = spd_labels(dense.spd, dense.pair_mask).unsqueeze(-1)
    return head.cross_entropy(node, labels, NUM_SPD_CLASSES)


def edge_loss(
    head: PairHead, node: Tensor, dense: DenseMolBatch, target: str = "factored"
) -> tuple[Tensor | None, Tensor | None]:
    """Cross-entropy and accuracy of the bond at every hop of every pair's path, under
    an edge target (:data:`EDGE_TARGETS`): mean over the (pair, hop) entries with a bond
    of the summed cross-entropies of its (type, conjugated) class and its stereo label
    (``"factored"``), or of its class of 60 (``"joint"``); a hop is correct when its whole
    triple is.

    Examples:
        >>> from torch_geometric.data import Batch
        >>> from pyg_molblend.data import from_smiles, to_dense
        >>> from pyg_molblend.nn import PairHead
        >>> dense = to_dense(Batch.from_data_list([from_smiles("CC=O")]), max_hops=2)
        >>> head = PairHead(16, 2 * 16)  # one block of 10 + 6 classes per hop
        >>> loss, accuracy = edge_loss(head, torch.randn(1, 3, 16), dense)
        >>> loss.item() > 0, 0.0 <= accuracy.item() <= 1.0
        (True, True)
    """
    labels = edge_labels(dense.path_edge, dense.edge_attr, target)
    return head.cross_entropy(node, labels, edge_classes(target))


def direction_loss(pred: Tensor, dense: DenseMolBatch) -> Tensor | None:
    r""":math:`1 - \cos(\hat{z}_{ij}, p_j - p_i)` on clean coordinates, averaged per
    molecule over :math:`i \ne j`, then over the molecules with 3D.

    Examples:
        >>> from torch_geometric.data import Batch
        >>> from pyg_molblend.data import from_smiles, to_dense
        >>> from pyg_molblend.transforms import AddConformer
        >>> dense = to_dense(Batch.from_data_list([AddConformer()(from_smiles("CCO"))]))
        >>> target = dense.pos.unsqueeze(1) - dense.pos.unsqueeze(2)
        >>> abs(direction_loss(target, dense).item()) < 1e-6  # the true directions: loss 0
        True
    """
    assert dense.pos is not None
    target = dense.pos.unsqueeze(1) - dense.pos.unsqueeze(2)  # [B, i, j] = p_j - p_i
    eye = torch.eye(dense.max_num_nodes, dtype=torch.bool, device=pred.device)
    valid = dense.pair_has_pos & ~eye
    count = valid.sum((1, 2))
    if not bool((count > 0).any()):
        return None
    cos = F.cosine_similarity(pred, target, dim=-1)
    per_molecule = ((1.0 - cos) * valid).sum((1, 2)) / count.clamp(min=1)
    return per_molecule[count > 0].mean()


def denoise_loss(eps_hat: Tensor, noise: Tensor, atoms: Tensor) -> Tensor | None:
    r""":math:`1 - \cos(\hat\epsilon_i, \epsilon_i)` averaged over the atoms in
    :obj:`atoms` (``[B, N]`` bool), :obj:`None` when there are none.

    Examples:
        >>> noise = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
        >>> denoise_loss(noise, noise, torch.tensor([[True, True]])).item()  # perfect prediction
        0.0
        >>> denoise_loss(noise, noise, torch.tensor([[False, False]])) is None
        True
    """
    if not bool(atoms.any()):
        return None
    return (1.0 - F.cosine_similarity(eps_hat[atoms], noise[atoms], dim=-1)).mean()


def masked_bce_loss(logits: Tensor, target: Tensor, pos_weight: Tensor | None = None) -> Tensor:
    """Binary cross-entropy averaged over the labels that are present (NaN = missing);
    0 when none is. No host synchronisation: the mask weights the terms.

    Args:
        logits (Tensor): ``[B, T]`` raw outputs.
        target (Tensor): ``[B, T]`` labels 0 or 1, NaN where missing.
        pos_weight (Tensor, optional): ``[T]`` weight of the positive term of each task,
            as :class:`torch.nn.BCEWithLogitsLoss`'s (``n_negative / n_positive`` balances
            the classes); the mean is still over the present labels. :obj:`None` leaves
            the loss unweighted. (default: :obj:`None`)

    Examples:
        >>> target = torch.tensor([[1.0, float("nan")]])  # the second label is missing
        >>> masked_bce_loss(torch.zeros(1, 2), target).item() == torch.log(torch.tensor(2.0)).item()
        True
        >>> weighted = masked_bce_loss(torch.zeros(1, 2), target, torch.tensor([3.0, 1.0]))
        >>> round(weighted.item(), 4) == round(3 * torch.log(torch.tensor(2.0)).item(), 4)
        True
    """
    valid = ~torch.isnan(target)
    loss = F.binary_cross_entropy_with_logits(
        logits, torch.where(valid, target, 0.0), reduction="none", pos_weight=pos_weight
    )
    return torch.where(valid, loss, 0.0).sum() / valid.sum().clamp(min=1)


def masked_cross_entropy_loss(
    logits: Tensor, target: Tensor, class_weight: Tensor | None = None
) -> Tensor:
    """Multiclass cross-entropy averaged over the labels that are present (NaN =
    missing); 0 when none is. No host synchronisation: the mask weights the terms.

    Args:
        logits (Tensor): ``[B, T, K]`` raw outputs, :math:`K` classes per task.
        target (Tensor): ``[B, T]`` class indices 0 to :math:`K - 1` (as floats), NaN
            where missing.
        class_weight (Tensor, optional): ``[T, K]`` weight of each task's classes; a
            label's term is multiplied by its class's weight and the mean is still over
            the present labels, as :func:`masked_bce_loss` does with ``pos_weight``.
            :obj:`None` leaves the loss unweighted. (default: :obj:`None`)

    Examples:
        >>> logits = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]])
        >>> target = torch.tensor([[1.0, float("nan")]])  # the second label is missing
        >>> masked_cross_entropy_loss(logits, target).item() == torch.log(torch.tensor(3.0)).item()
        True
    """
    valid = ~torch.isnan(target)
    index = torch.where(valid, target, 0.0).long()
    loss = -torch.log_softmax(logits.float(), -1).gather(-1, index.unsqueeze(-1)).squeeze(-1)
    if class_weight is not None:
        tasks = torch.arange(target.size(1), device=target.device)
        loss = loss * class_weight.to(loss.dtype)[tasks, index]
    return torch.where(valid, loss, 0.0).sum() / valid.sum().clamp(min=1)


def masked_mse_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over the targets that are present (NaN = missing); 0 when none
    is. No host synchronisation: the mask weights the terms.

    Examples:
        >>> masked_mse_loss(torch.tensor([[1.0], [5.0]]), torch.tensor([[3.0], [float("nan")]]))
        tensor(4.)
    """
    valid = ~torch.isnan(target)
    error = torch.where(valid, pred - target, 0.0)
    return error.square().sum() / valid.sum().clamp(min=1)
