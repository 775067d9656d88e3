"""pyg_molblend.models.losses: the labels and the losses, by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from pyg_molblend.models.losses import (
    edge_labels,
    masked_bce_loss,
    masked_cross_entropy_loss,
    masked_mse_loss,
    spd_labels,
)


def test_labels_by_hand():
    spd = torch.tensor([[[0, 1, 12], [1, 0, 255], [25, 3, -1]]])
    pair_mask = torch.tensor([[[True, True, True], [True, True, True], [True, True, False]]])
    assert spd_labels(spd, pair_mask).tolist() == [[[-100, 0, 10], [0, -100, -100], [10, 2, -100]]]
    edge_attr = torch.tensor([[1, 0, 1], [4, 5, 0]])
    path = torch.tensor([[0, 1, -1]])
    # double, no stereo, conjugated = 1*12 + 0 + 1; misc type with stereo ANY = 4*12 + 5*2
    assert edge_labels(path, edge_attr, "joint").tolist() == [[13, 58, -100]]
    # factored: (type, conjugated) = 1*2 + 1 and 4*2 + 0, then the stereo label; a whole
    # row ignored where the hop has no bond
    assert edge_labels(path, edge_attr).tolist() == [[[3, 0], [8, 5], [-100] * 2]]
    with pytest.raises(ValueError, match="'pairs'"):
        edge_labels(path, edge_attr, "pairs")


def test_masked_losses_average_over_present_labels_only():
    logits = torch.tensor([[0.5, -1.0], [2.0, 0.3]], requires_grad=True)
    target = torch.tensor([[1.0, math.nan], [0.0, 1.0]])
    bce = masked_bce_loss(logits, target)
    present = torch.tensor([0.5, 2.0, 0.3]), torch.tensor([1.0, 0.0, 1.0])
    assert torch.allclose(bce, F.binary_cross_entropy_with_logits(*present))
    bce.backward()
    assert logits.grad[0, 1] == 0  # the missing label pulls nothing
    mse = masked_mse_loss(
        torch.tensor([[1.0], [3.0], [7.0]]), torch.tensor([[2.0], [math.nan], [5.0]])
    )
    assert mse.item() == pytest.approx((1.0 + 4.0) / 2)
    nothing = torch.full((2, 1), math.nan)
    assert masked_mse_loss(torch.ones(2, 1), nothing).item() == 0.0
    assert masked_bce_loss(torch.ones(2, 1), nothing).item() == 0.0


def test_masked_cross_entropy_is_torch_cross_entropy_over_present_labels():
    torch.manual_seed(0)
    logits = torch.randn(5, 2, 3, requires_grad=True)
    target = torch.tensor([[0.0, 2.0], [1.0, math.nan], [2.0, 2.0], [math.nan, 0.0], [1.0, 1.0]])
    loss = masked_cross_entropy_loss(logits, target)
    labels = torch.where(target.isnan(), -100, target).long()
    expected = F.cross_entropy(logits.reshape(-1, 3), labels.reshape(-1), ignore_index=-100)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert (logits.grad[1, 1] == 0).all() and (logits.grad[3, 0] == 0).all()
    # Weights multiply each present label's term; the mean stays over present labels.
    weight = torch.tensor([[1.0, 2.0, 3.0], [0.5, 1.0, 4.0]])
    terms = F.cross_entropy(logits.reshape(-1, 3), labels.reshape(-1), reduction="none")
    present = labels.reshape(-1) >= 0
    per_label = weight[torch.arange(2).repeat(5), labels.reshape(-1).clamp(min=0)]
    hand = (terms * per_label)[present].sum() / present.sum()
    assert torch.allclose(masked_cross_entropy_loss(logits, target, weight), hand)
    assert masked_cross_entropy_loss(logits, torch.full((5, 2), math.nan)).item() == 0.0
