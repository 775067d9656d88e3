"""Graph-level prediction on top of the MoleBLEND encoder (fine-tuning)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from pyg_molblend.constants import TASK_TYPES
from pyg_molblend.data.dense import DenseMolBatch
from pyg_molblend.models.losses import (
    masked_bce_loss,
    masked_cross_entropy_loss,
    masked_mse_loss,
)
from pyg_molblend.models.moleblend import INIT_STD, MoleBlend
from pyg_molblend.nn.blend import MODES
from pyg_molblend.nn.dropout import Dropout

__all__ = ["TASK_TYPES", "MoleBlendPredictor", "output_names"]


def output_names(target_names: list[str], num_classes: int | None = None) -> list[str]:
    """Names of a predictor's output columns: the task names, or for :obj:`num_classes`
    classes per task (multiclass) ``<task>_class_<k>`` for each task and class, the
    order of :meth:`MoleBlendPredictor.predict`'s columns.

    Examples:
        >>> output_names(["logS"]), output_names(["phase", "shape"], num_classes=2)
        (['logS'], ['phase_class_0', 'phase_class_1', 'shape_class_0', 'shape_class_1'])
    """
    if num_classes is None:
        return list(target_names)
    return [f"{name}_class_{k}" for name in target_names for k in range(num_classes)]


class MoleBlendPredictor(nn.Module):
    r"""Multi-task graph property prediction with a MoleBLEND encoder.

    The graph token's state goes through the reference's classification head
    (Linear, GELU, Linear). Classification tasks are independent binary labels trained
    with :func:`masked_bce_loss` (missing labels, NaN, are masked). Multiclass tasks
    each choose one of :obj:`num_classes` classes (labels 0 to :math:`K - 1`), trained
    with :func:`masked_cross_entropy_loss`; their outputs are :math:`K` columns per task
    (:func:`output_names`), probabilities summing to 1 per task. Regression targets
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
    (:meth:`fit_class_weights`, the ``pos_weight`` of :func:`masked_bce_loss`), and
    multiclass each class of each task (``class_weight``); the weights only change the
    training loss and are part of :meth:`state_dict` once set (a state without them, as
    every older checkpoint, loads as unweighted).

    To rebuild a predictor from its :meth:`state_dict`, construct it with the same
    :obj:`num_tasks`, :obj:`task_type`, :obj:`mode`, :obj:`num_descriptors` and
    :obj:`num_classes`.

    Args:
        encoder (MoleBlend): the (pretrained) encoder.
        num_tasks (int): number of tasks.
        task_type (str): ``"classification"``, ``"multiclass"`` or ``"regression"``.
        mode (str, optional): encoding mode; ``"2d"`` when no conformers exist,
            ``"2d+3d"`` when they do (paper eqs. 4 and 5). (default: :obj:`"2d"`)
        dropout (float, optional): dropout inside the head. (default: :obj:`0.0`)
        num_descriptors (int, optional): number :math:`D` of per-molecule descriptors
            concatenated to the graph embedding; 0 for none. (default: :obj:`0`)
        num_classes (int, optional): classes per task :math:`K \ge 2` of a multiclass
            predictor; :obj:`None` for the other task types. (default: :obj:`None`)

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

        Multiclass, two tasks of three classes each (probabilities, 3 columns per task):

        >>> predictor = MoleBlendPredictor(
        ...     MoleBlend.from_preset("small"), 2, "multiclass", num_classes=3
        ... ).eval()
        >>> prob = predictor.predict(batch)
        >>> prob.shape, prob.view(2, 2, 3).sum(-1).allclose(torch.ones(2, 2))
        (torch.Size([2, 6]), True)
    """

    def __init__(
        self,
        encoder: MoleBlend,
        num_tasks: int,
        task_type: str = "classification",
        mode: str = "2d",
        dropout: float = 0.0,
        num_descriptors: int = 0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}")
        if task_type == "multiclass":
            if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
                raise ValueError(
                    f"A multiclass predictor needs num_classes of at least 2, got {num_classes!r}"
                )
        elif num_classes is not None:
            raise ValueError(
                f"num_classes is for multiclass tasks, got num_classes={num_classes!r} for "
                f"{task_type}"
            )
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
        self.num_classes = num_classes
        self.dropout = dropout
        self.head = nn.Sequential(
            Dropout(dropout),
            nn.Linear(channels + num_descriptors, channels),
            nn.GELU(),
            Dropout(dropout),
            nn.Linear(channels, self.num_outputs),
        )
        self.register_buffer("target_mean", torch.zeros(num_tasks))
        self.register_buffer("target_std", torch.ones(num_tasks))
        if num_descriptors > 0:  # only then: older checkpoints load unchanged
            self.register_buffer("descriptor_mean", torch.zeros(num_descriptors))
            self.register_buffer("descriptor_std", torch.ones(num_descriptors))
        # None (no weighting, and no state_dict entry) until fit_class_weights sets them:
        # pos_weight [T] for classification, class_weight [T, K] for multiclass.
        self.register_buffer("pos_weight", None)
        self.register_buffer("class_weight", None)

    @property
    def num_outputs(self) -> int:
        """Output columns: :obj:`num_tasks`, times :obj:`num_classes` for multiclass."""
        return self.num_tasks * (self.num_classes or 1)

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
        """Balance the classes of each task, counted over the present labels of the
        training targets ``[num_graphs, T]`` (NaN = missing).

        Classification weights the positive labels of each task by
        ``n_negative / n_positive``, as :class:`torch.nn.BCEWithLogitsLoss`'s
        ``pos_weight`` (returns ``[T]``); a task without both classes keeps the weight 1.
        Multiclass weights class :math:`k` of a task by :math:`n / (K n_k)`, scikit-learn's
        ``"balanced"`` weights (returns ``[T, K]``); a class absent from a task's labels
        keeps the weight 1. Either case warns about what kept the weight 1.

        Raises:
            ValueError: for a regression predictor.

        Examples:
            >>> from pyg_molblend.models import MoleBlend
            >>> predictor = MoleBlendPredictor(MoleBlend.from_preset("small"), num_tasks=2)
            >>> y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, float("nan")]])
            >>> predictor.fit_class_weights(y).tolist()  # 3 negatives / 1 positive, 1 / 2
            [3.0, 0.5]
            >>> predictor = MoleBlendPredictor(
            ...     MoleBlend.from_preset("small"), 1, "multiclass", num_classes=3
            ... )
            >>> y = torch.tensor([[0.0], [0.0], [0.0], [1.0], [2.0], [2.0]])
            >>> predictor.fit_class_weights(y).tolist()  # 6 / (3 * 3), 6 / (3 * 1), 6 / (3 * 2)
            [[0.6666666865348816, 2.0, 1.0]]
        """
        if self.task_type == "regression":
            raise ValueError(
                "Class weights are for classification and multiclass tasks, this predictor "
                "does regression"
            )
        y = y.to(self.target_mean.device, torch.float).view(-1, self.num_tasks)
        valid = ~torch.isnan(y)
        if self.task_type == "multiclass":
            assert self.num_classes is not None
            classes = torch.arange(self.num_classes, device=y.device)
            count = ((y.unsqueeze(-1) == classes) & valid.unsqueeze(-1)).sum(0)  # [T, K]
            present = count > 0
            weight = torch.where(
                present, valid.sum(0, keepdim=True).T / (self.num_classes * count.clamp(min=1)), 1.0
            )
            if not bool(present.all()):
                missing = (~present).nonzero().tolist()
                warnings.warn(
                    f"(task, class) pairs {missing} have no training labels; they keep the "
                    "weight 1",
                    stacklevel=2,
                )
            self.class_weight = weight
            return weight.clone()
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
        # The class weights exist only once fitted: a state carries them or not, and
        # decides; when it does they are filled (and their shape checked) by the default
        # loading.
        shapes = {
            "pos_weight": (self.num_tasks,),
            "class_weight": (self.num_tasks, self.num_classes or 1),
        }
        for name, shape in shapes.items():
            present = state_dict.get(prefix + name) is not None
            setattr(self, name, self.target_mean.new_ones(shape) if present else None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, batch: Batch | Data | DenseMolBatch) -> Tensor:
        """Raw outputs ``[B, num_outputs]``: logits (multiclass: :obj:`num_classes` per
        task, task after task), or standardised regression values."""
        out = self.encoder.encode(batch, self.mode, nodes=False)
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
        target = batch.y.view(out.size(0), self.num_tasks)
        target = target.to(out.device, out.dtype, non_blocking=True)
        if self.task_type == "multiclass":
            logits = out.view(out.size(0), self.num_tasks, -1)
            return masked_cross_entropy_loss(logits, target, self.class_weight)
        if self.task_type == "classification":
            if self.pos_weight is None:
                return masked_bce_loss(out, target)
            return masked_bce_loss(out, target, self.pos_weight.to(out.dtype))
        return masked_mse_loss(out, (target - self.target_mean) / self.target_std)

    @torch.no_grad()
    def predict(self, batch: Batch | Data | DenseMolBatch) -> Tensor:
        """``[B, num_outputs]``: probabilities (classification; multiclass: of each class,
        summing to 1 per task) or values in target units (regression)."""
        out = self(batch)
        if self.task_type == "multiclass":
            return torch.softmax(out.view(out.size(0), self.num_tasks, -1), -1).flatten(1)
        if self.task_type == "classification":
            return torch.sigmoid(out)
        return out * self.target_std + self.target_mean
