"""Fine-tuning and evaluation loops for graph property prediction."""

from __future__ import annotations

import copy
import math
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_geometric.loader import DataLoader
from tqdm.auto import tqdm

from pyg_molblend.models import MoleBlendPredictor
from pyg_molblend.training.metrics import compute_metrics, higher_is_better, primary_metric

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "check_finite_step",
    "finetune",
    "predict",
    "seed_everything",
]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class FinetuneConfig:
    """Optimisation settings (reference defaults: Adam, clip 5, warm-up of
    ``ceil(epochs / 10)`` epochs, then cosine decay)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_epochs: int | None = None
    clip_norm: float = 5.0
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@dataclass
class FinetuneResult:
    """Metrics of the model selected on validation, and the run's history."""

    metric: str
    valid: dict[str, float]
    test: dict[str, float]
    best_epoch: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    test_predictions: np.ndarray | None = None


def warmup_cosine(warmup_steps: int, total_steps: int) -> Any:
    """Multiplier of a linear warm-up followed by cosine decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def check_finite_step(
    loss: torch.Tensor, grad_norm: torch.Tensor, step: int, lr: float, kept: str
) -> tuple[float, float]:
    """The loss and gradient norm of a training step as floats, or a :class:`ValueError`
    when either is NaN or infinite (checked before the optimizer step, so the weights
    never take a non-finite update).

    Args:
        kept (str): what the user keeps, for the message (the last checkpoint, say).
    """
    loss_value, grad_value = loss.item(), grad_norm.item()
    if not (math.isfinite(loss_value) and math.isfinite(grad_value)):
        raise ValueError(
            f"Training diverged at step {step}: loss {loss_value}, gradient norm "
            f"{grad_value} at learning rate {lr:.3g}. Lower the learning rate (lr); {kept}"
        )
    return loss_value, grad_value


@torch.no_grad()
def predict(
    predictor: MoleBlendPredictor,
    dataset: Dataset | Sequence,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
    desc: str = "predict",
) -> np.ndarray:
    """Predictions ``[len(dataset), T]`` in dataset order (probabilities or values)."""
    predictor.eval()
    outputs = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        outputs.append(predictor.predict(batch.to(device)).cpu())
    if not outputs:
        return np.zeros((0, predictor.num_tasks), dtype=np.float32)
    return torch.cat(outputs).numpy()


def _targets(dataset: Dataset | Sequence, num_tasks: int) -> np.ndarray:
    if len(dataset) == 0:
        return np.zeros((0, num_tasks), dtype=np.float32)
    return torch.cat([dataset[i].y.view(1, -1) for i in range(len(dataset))]).numpy()


def evaluate(
    predictor: MoleBlendPredictor,
    dataset: Dataset | Sequence,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
    desc: str = "evaluate",
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics of :obj:`predictor` on :obj:`dataset`, and its predictions."""
    pred = predict(predictor, dataset, batch_size, device, progress, desc)
    return compute_metrics(predictor.task_type, _targets(dataset, predictor.num_tasks), pred), pred


def finetune(
    predictor: MoleBlendPredictor,
    train_set: Dataset | Sequence,
    valid_set: Dataset | Sequence,
    test_set: Dataset | Sequence,
    config: FinetuneConfig,
) -> FinetuneResult:
    """Train on :obj:`train_set`, select the epoch on :obj:`valid_set` only, and evaluate
    the selected model once on :obj:`test_set`."""
    if len(train_set) == 0 or len(valid_set) == 0:
        raise ValueError(
            f"Need non-empty train and valid sets, got {len(train_set)} and {len(valid_set)}"
        )
    start = time.perf_counter()
    seed_everything(config.seed)
    device = config.device
    predictor.to(device)
    predictor.fit_targets(torch.from_numpy(_targets(train_set, predictor.num_tasks)))
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.AdamW(
        predictor.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    warmup = config.warmup_epochs
    warmup = math.ceil(config.epochs / 10) if warmup is None else warmup
    total = config.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(warmup * len(loader), total)
    )
    metric = primary_metric(predictor.task_type)
    better = higher_is_better(metric)
    best_score, best_epoch, best_state = None, 0, None
    history = []
    bar = tqdm(range(1, config.epochs + 1), desc="finetune", disable=not config.progress)
    try:
        for epoch in bar:
            predictor.train()
            total_loss, count = 0.0, 0
            for batch in loader:
                batch = batch.to(device)
                optimizer.zero_grad()
                loss = predictor.loss(batch)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(predictor.parameters(), config.clip_norm)
                loss_value, _ = check_finite_step(
                    loss,
                    grad_norm,
                    scheduler.last_epoch + 1,
                    scheduler.get_last_lr()[0],
                    f"epoch {epoch}; nothing was saved",
                )
                optimizer.step()
                scheduler.step()
                total_loss += loss_value * batch.num_graphs
                count += batch.num_graphs
            valid_metrics, _ = evaluate(predictor, valid_set, config.batch_size, device)
            score = valid_metrics[metric]
            history.append({"epoch": epoch, "loss": total_loss / count, **valid_metrics})
            if math.isnan(score) and epoch == 1:
                why = "a single class in the validation set?" if better else "no valid targets?"
                warnings.warn(
                    f"Validation {metric} is undefined ({why}); "
                    "epochs with an undefined score are only kept until a defined one appears",
                    stacklevel=2,
                )
            improved = (
                best_score is None
                or math.isnan(best_score)
                or (
                    not math.isnan(score) and (score > best_score if better else score < best_score)
                )
            )
            if improved:
                best_score, best_epoch = score, epoch
                best_state = copy.deepcopy(predictor.state_dict())
            bar.set_postfix(loss=f"{total_loss / count:.4f}", **{f"valid_{metric}": f"{score:.4f}"})
    finally:  # the error message, if any, starts on its own line
        bar.close()
    assert best_state is not None
    predictor.load_state_dict(best_state)
    valid_metrics, _ = evaluate(predictor, valid_set, config.batch_size, device)
    test_metrics, test_pred = evaluate(predictor, test_set, config.batch_size, device)
    return FinetuneResult(
        metric=metric,
        valid=valid_metrics,
        test=test_metrics,
        best_epoch=best_epoch,
        seconds=time.perf_counter() - start,
        history=history,
        test_predictions=test_pred,
    )
