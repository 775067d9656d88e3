"""Evaluation metrics of molecular property prediction."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["compute_metrics", "higher_is_better", "mae", "primary_metric", "rmse", "roc_auc"]


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC-AUC per task over present labels (NaN = missing), averaged over the tasks that
    have both classes (MoleculeNet / OGB convention); NaN if no task has both.

    Examples:
        >>> import numpy as np
        >>> y = np.array([[0.0, 1.0], [1.0, np.nan], [1.0, 1.0]])  # task 2 has one class only
        >>> roc_auc(y, np.array([[0.1, 0.5], [0.9, 0.5], [0.8, 0.5]]))
        1.0
    """
    from sklearn.metrics import roc_auc_score

    y_true, y_score = np.asarray(y_true, float), np.asarray(y_score, float)
    scores = []
    for task in range(y_true.shape[1]):
        valid = ~np.isnan(y_true[:, task])
        labels = y_true[valid, task]
        if labels.size and 0 < labels.sum() < labels.size:
            scores.append(roc_auc_score(labels, y_score[valid, task]))
    return float(np.mean(scores)) if scores else math.nan


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error over present targets (NaN = missing).

    Examples:
        >>> import numpy as np
        >>> rmse(np.array([[1.0], [np.nan]]), np.array([[3.0], [0.0]]))  # NaN target: skipped
        2.0
    """
    valid = ~np.isnan(y_true)
    return (
        float(np.sqrt(np.mean((y_true[valid] - y_pred[valid]) ** 2))) if valid.any() else math.nan
    )


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error over present targets (NaN = missing).

    Examples:
        >>> import numpy as np
        >>> mae(np.array([[1.0], [2.0]]), np.array([[0.0], [4.0]]))
        1.5
    """
    valid = ~np.isnan(y_true)
    return float(np.mean(np.abs(y_true[valid] - y_pred[valid]))) if valid.any() else math.nan


def primary_metric(task_type: str) -> str:
    """The model-selection metric: ``"roc_auc"`` or ``"rmse"``.

    Examples:
        >>> primary_metric("classification"), primary_metric("regression")
        ('roc_auc', 'rmse')
    """
    return "roc_auc" if task_type == "classification" else "rmse"


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of :obj:`metric` is better (ROC-AUC) or worse (errors).

    Examples:
        >>> higher_is_better("roc_auc"), higher_is_better("rmse")
        (True, False)
    """
    return metric == "roc_auc"


def compute_metrics(task_type: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """All metrics of a task type: ROC-AUC, or RMSE and MAE.

    Examples:
        >>> import numpy as np
        >>> compute_metrics("regression", np.array([[1.0], [3.0]]), np.array([[2.0], [3.0]]))
        {'rmse': 0.7071..., 'mae': 0.5}
    """
    if task_type == "classification":
        return {"roc_auc": roc_auc(y_true, y_pred)}
    return {"rmse": rmse(y_true, y_pred), "mae": mae(y_true, y_pred)}
