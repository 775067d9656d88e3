"""Graph-level prediction on top of the MoleBLEND encoder (fine-tuning)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from pyg_molblend.data.dense import DenseMolBatch
from pyg_molblend.models.losses import masked_bce_loss, masked_mse_loss
from pyg_molblend.models.moleblend import INIT_STD, MoleBlend
from pyg_molblend.nn.blend import MODES
from pyg_molblend.nn.dropout import Dropout

__all__ = ["TASK_TYPES", "MoleBlendPredictor"]

TASK_TYPES = ("classification", "regression")


class MoleBlendPredictor(nn.Module):
    r"""Multi-task graph property prediction with a MoleBLEND encoder.

    The graph token's state goes through the reference's classification head
    (Linear, GELU, Linear). Classification tasks are independent binary labels trained
    with :func:`masked_bce_loss` (missing labels, NaN, are masked). Regression targets
    are standardised with the training set's mean and std (:meth:`fit_targets`) and
    trained with MSE in standard units, which is the reference's MSE on
    ``pred * std + mean`` divided by :math:`\sigma^2` per task; :meth:`predict` returns
    original units.

    Args:
        encoder (MoleBlend): the (pretrained) encoder.
        num_tasks (int): number of outputs.
        task_type (str): ``"classification"`` or ``"regression"``.
        mode (str, optional): encoding mode; ``"2d"`` when no conformers exist,
            ``"2d+3d"`` when they do (paper eqs. 4 and 5). (default: :obj:`"2d"`)
        dropout (float, optional): dropout inside the head. (default: :obj:`0.0`)

    Examples:
        >>> from torch_geometric.data import Batch
        >>> from pyg_molblend.data import from_smiles
        >>> from pyg_molblend.models import MoleBlend
        >>> predictor = MoleBlendPredictor(MoleBlend.from_preset("small"), num_tasks=2).eval()
        >>> batch = Batch.from_data_list([from_smiles("CCO"), from_smiles("CCN")])
        >>> predictor.predict(batch).shape  # probabilities for two classification tasks
        torch.Size([2, 2])
    """

    def __init__(
        self,
        encoder: MoleBlend,
        num_tasks: int,
        task_type: str = "classification",
        mode: str = "2d",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}")
        if mode not in MODES or mode == "blend":
            raise ValueError(f"mode must be '2d', '3d' or '2d+3d' for prediction, got {mode!r}")
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be positive, got {num_tasks}")
        channels = encoder.channels
        self.encoder = encoder
        self.num_tasks = num_tasks
        self.task_type = task_type
        self.mode = mode
        self.head = nn.Sequential(
            Dropout(dropout),
            nn.Linear(channels, channels),
            nn.GELU(),
            Dropout(dropout),
            nn.Linear(channels, num_tasks),
        )
        self.register_buffer("target_mean", torch.zeros(num_tasks))
        self.register_buffer("target_std", torch.ones(num_tasks))

    def reset_head(self) -> None:
        for module in self.head:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=INIT_STD)
                nn.init.zeros_(module.bias)

    @torch.no_grad()
    def fit_targets(self, y: Tensor) -> None:
        """Set the regression standardisation from training targets ``[num_graphs, T]``."""
        if self.task_type != "regression":
            return
        y = y.to(self.target_mean.device, torch.float).view(-1, self.num_tasks)
        valid = ~torch.isnan(y)
        if not bool(valid.any(0).all()):
            empty = (~valid.any(0)).nonzero().view(-1).tolist()
            raise ValueError(f"Tasks {empty} have no training targets")
        count = valid.sum(0)
        mean = torch.where(valid, y, 0.0).sum(0) / count
        var = torch.where(valid, (y - mean) ** 2, 0.0).sum(0) / count.clamp(min=1)
        self.target_mean.copy_(mean)
        self.target_std.copy_(var.sqrt().clamp(min=1e-6))

    def forward(self, batch: Batch | Data | DenseMolBatch) -> Tensor:
        """Raw outputs ``[B, T]``: logits, or standardised regression values."""
        return self.head(self.encoder.encode(batch, self.mode).graph)

    def loss(self, batch: Batch | Data, out: Tensor | None = None) -> Tensor:
        """Training loss against ``batch.y`` (``[B, T]``, NaN = missing)."""
        out = self(batch) if out is None else out
        target = batch.y.view(out.shape).to(out.device, out.dtype, non_blocking=True)
        if self.task_type == "classification":
            return masked_bce_loss(out, target)
        return masked_mse_loss(out, (target - self.target_mean) / self.target_std)

    @torch.no_grad()
    def predict(self, batch: Batch | Data | DenseMolBatch) -> Tensor:
        """Probabilities (classification) or values in target units (regression)."""
        out = self(batch)
        if self.task_type == "classification":
            return torch.sigmoid(out)
        return out * self.target_std + self.target_mean
