"""Graph-level prediction on top of the MoleBLEND encoder (fine-tuning)."""

from __future__ import annotations

import warnings
from typing import Any

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

    With :obj:`num_descriptors` :math:`D > 0`, every molecule carries ``descriptors``
    ``[1, D]`` (:class:`~pyg_molblend.transforms.AddDescriptors`; batched ``[B, D]``),
    which are standardised with the training set's mean and std
    (:meth:`fit_descriptors`, buffers ``descriptor_mean`` and ``descriptor_std``) and
    concatenated to the graph embedding before the head, as chemprop's extra features.
    Classification can weight the positive labels of each task
    (:meth:`fit_class_weights`, the ``pos_weight`` of :func:`masked_bce_loss`); the
    weights only change the training loss and are part of :meth:`state_dict` once set
    (a state without them, as every older checkpoint, loads as unweighted).

    To rebuild a predictor from its :meth:`state_dict`, construct it with the same
    :obj:`num_tasks`, :obj:`task_type`, :obj:`mode` and :obj:`num_descriptors`.

    Args:
        encoder (MoleBlend): the (pretrained) encoder.
        num_tasks (int): number of outputs.
        task_type (str): ``"classification"`` or ``"regression"``.
        mode (str, optional): encoding mode; ``"2d"`` when no conformers exist,
            ``"2d+3d"`` when they do (paper eqs. 4 and 5). (default: :obj:`"2d"`)
        dropout (float, optional): dropout inside the head. (default: :obj:`0.0`)
        num_descriptors (int, optional): number :math:`D` of per-molecule descriptors
            concatenated to the graph embedding; 0 for none. (default: :obj:`0`)

    Examples:
        >>> from torch_geometric.data import Batch
        >>> from pyg_molblend.data import from_smiles
        >>> from pyg_molblend.models import MoleBlend
        >>> predictor = MoleBlendPredictor(MoleBlend.from_preset("small"), num_tasks=2).eval()
        >>> batch = Batch.from_data_list([from_smiles("CCO"), from_smiles("CCN")])
        >>> predictor.predict(batch).shape  # probabilities for two classification tasks
        torch.Size([2, 2])

        With two descriptors per molecule:

        >>> graphs = [from_smiles("CCO"), from_smiles("CCN")]
        >>> for graph, row in zip(graphs, [[1.0, 10.0], [3.0, 30.0]]):
        ...     graph.descriptors = torch.tensor([row])
        >>> predictor = MoleBlendPredictor(MoleBlend.from_preset("small"), 1, num_descriptors=2)
        >>> predictor.fit_descriptors(torch.tensor([[1.0, 10.0], [3.0, 30.0]]))
        >>> predictor.descriptor_mean.tolist(), predictor.descriptor_std.tolist()
        ([2.0, 20.0], [1.0, 10.0])
        >>> predictor.eval().predict(Batch.from_data_list(graphs)).shape
        torch.Size([2, 1])
    """

    def __init__(
        self,
        encoder: MoleBlend,
        num_tasks: int,
        task_type: str = "classification",
        mode: str = "2d",
        dropout: float = 0.0,
        num_descriptors: int = 0,
    ) -> None:
        super().__init__()
        if task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}")
        if mode not in MODES or mode == "blend":
            raise ValueError(f"mode must be '2d', '3d' or '2d+3d' for prediction, got {mode!r}")
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be positive, got {num_tasks}")
        if isinstance(num_descriptors, bool) or num_descriptors < 0:
            raise ValueError(f"num_descriptors must be 0 or more, got {num_descriptors!r}")
        channels = encoder.channels
        self.encoder = encoder
        self.num_tasks = num_tasks
        self.task_type = task_type
        self.mode = mode
        self.num_descriptors = num_descriptors
        self.dropout = dropout
        self.head = nn.Sequential(
            Dropout(dropout),
            nn.Linear(channels + num_descriptors, channels),
            nn.GELU(),
            Dropout(dropout),
            nn.Linear(channels, num_tasks),
        )
        self.register_buffer("target_mean", torch.zeros(num_tasks))
        self.register_buffer("target_std", torch.ones(num_tasks))
        if num_descriptors > 0:  # only then: older checkpoints load unchanged
            self.register_buffer("descriptor_mean", torch.zeros(num_descriptors))
            self.register_buffer("descriptor_std", torch.ones(num_descriptors))
        # None (no weighting, and no state_dict entry) until fit_class_weights sets it.
        self.register_buffer("pos_weight", None)

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

    @torch.no_grad()
    def fit_descriptors(self, x: Tensor) -> None:
        """Set the descriptor standardisation from the training set's descriptors
        ``[num_graphs, D]``: their mean and (population) std per column, a std of 0
        (a constant column) counting as 1.

        Raises:
            ValueError: if the predictor has no descriptors, :obj:`x` has another number of
                columns, no rows, or a non-finite value.
        """
        if self.num_descriptors == 0:
            raise ValueError("This predictor has no descriptors (num_descriptors=0)")
        x = x.to(self.descriptor_mean.device, torch.float)
        if x.dim() != 2 or x.size(1) != self.num_descriptors or x.size(0) == 0:
            raise ValueError(
                f"fit_descriptors needs descriptors [num_graphs, {self.num_descriptors}] with "
                f"at least one row, got {tuple(x.shape)}"
            )
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            row, column = (~finite).nonzero()[0].tolist()
            raise ValueError(
                f"Descriptor {column} of training molecule {row} is {x[row, column].item()}; "
                "descriptors must be finite"
            )
        mean = x.mean(0)
        std = x.std(0, unbiased=False)
        self.descriptor_mean.copy_(mean)
        self.descriptor_std.copy_(torch.where(std > 0, std, 1.0))

    @torch.no_grad()
    def fit_class_weights(self, y: Tensor) -> Tensor:
        """Balance the classes of each task: weight its positive labels by
        ``n_negative / n_positive`` counted over the present labels of the training
        targets ``[num_graphs, T]`` (NaN = missing), as :class:`torch.nn.BCEWithLogitsLoss`'s
        ``pos_weight``. A task without both classes in :obj:`y` keeps the weight 1 (with a
        warning). Returns the weights ``[T]``.

        Raises:
            ValueError: for a regression predictor.

        Examples:
            >>> from pyg_molblend.models import MoleBlend
            >>> predictor = MoleBlendPredictor(MoleBlend.from_preset("small"), num_tasks=2)
            >>> y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, float("nan")]])
            >>> predictor.fit_class_weights(y).tolist()  # 3 negatives / 1 positive, 1 / 2
            [3.0, 0.5]
        """
        if self.task_type != "classification":
            raise ValueError(
                f"Class weights are for classification, this predictor does {self.task_type}"
            )
        y = y.to(self.target_mean.device, torch.float).view(-1, self.num_tasks)
        valid = ~torch.isnan(y)
        positive = (valid & (y == 1)).sum(0)
        negative = (valid & (y == 0)).sum(0)
        both = (positive > 0) & (negative > 0)
        weight = torch.where(both, negative / positive.clamp(min=1), 1.0)
        if not bool(both.all()):
            tasks = (~both).nonzero().view(-1).tolist()
            warnings.warn(
                f"Tasks {tasks} lack a class among their training labels; "
                "their positive labels keep the weight 1",
                stacklevel=2,
            )
        self.pos_weight = weight
        return weight.clone()

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # pos_weight exists only once fitted: a state carries it or not, and decides.
        if state_dict.get(prefix + "pos_weight") is None:
            self.pos_weight = None
        else:  # filled (and its shape checked) by the default loading
            self.pos_weight = torch.ones_like(self.target_mean)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, batch: Batch | Data | DenseMolBatch) -> Tensor:
        """Raw outputs ``[B, T]``: logits, or standardised regression values."""
        out = self.encoder.encode(batch, self.mode)
        if self.num_descriptors == 0:
            return self.head(out.graph)
        descriptors = out.dense.descriptors
        expected = (out.graph.size(0), self.num_descriptors)
        if descriptors is None:
            raise ValueError(
                f"This predictor uses {self.num_descriptors} descriptors per molecule but the "
                "batch has none: give every graph descriptors [1, "
                f"{self.num_descriptors}] (pyg_molblend.transforms.AddDescriptors)"
            )
        if tuple(descriptors.shape) != expected:
            raise ValueError(
                f"Expected batch descriptors of shape {list(expected)} (each graph "
                f"[1, {self.num_descriptors}]), got {list(descriptors.shape)}"
            )
        descriptors = descriptors.to(out.graph.device, torch.float, non_blocking=True)
        scaled = (descriptors - self.descriptor_mean) / self.descriptor_std
        return self.head(torch.cat([out.graph, scaled.to(out.graph.dtype)], dim=-1))

    def loss(self, batch: Batch | Data, out: Tensor | None = None) -> Tensor:
        """Training loss against ``batch.y`` (``[B, T]``, NaN = missing)."""
        out = self(batch) if out is None else out
        target = batch.y.view(out.shape).to(out.device, out.dtype, non_blocking=True)
        if self.task_type == "classification":
            if self.pos_weight is None:
                return masked_bce_loss(out, target)
            return masked_bce_loss(out, target, self.pos_weight.to(out.dtype))
        return masked_mse_loss(out, (target - self.target_mean) / self.target_std)

    @torch.no_grad()
    def predict(self, batch: Batch | Data | DenseMolBatch) -> Tensor:
        """Probabilities (classification) or values in target units (regression)."""
        out = self(batch)
        if self.task_type == "classification":
            return torch.sigmoid(out)
        return out * self.target_std + self.target_mean
