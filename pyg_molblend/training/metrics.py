"""Evaluation metrics of molecular property prediction."""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "METRICS",
    "check_metric",
    "compute_metrics",
    "higher_is_better",
    "mae",
    "pr_auc",
    "primary_metric",
    "r2",
    "rmse",
    "roc_auc",
]

METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("roc_auc", "pr_auc"),
    "regression": ("rmse", "mae", "r2"),
}
"""The metrics :func:`compute_metrics` returns for each task type, any of which may select
the model on validation."""

_HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "r2": True, "rmse": False, "mae": False}


def _two_class_tasks(y_true: np.ndarray, y_score: np.ndarray):
    """Yield ``(labels, scores)`` of each task whose present labels hold both classes."""
    y_true, y_score = np.asarray(y_true, float), np.asarray(y_score, float)
    for task in range(y_true.shape[1]):
        valid = ~np.isnan(y_true[:, task])
        labels = y_true[valid, task]
        if labels.size and 0 < labels.sum() < labels.size:
            yield labels, y_score[valid, task]


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

    scores = [roc_auc_score(labels, score) for labels, score in _two_class_tasks(y_true, y_score)]
    return float(np.mean(scores)) if scores else math.nan


def pr_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve) per task over present
    labels (NaN = missing), averaged over the tasks that have both classes (OGB's metric for
    MUV and PCBA); NaN if no task has both.

    Examples:
        >>> import numpy as np
        >>> y = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, np.nan], [0.0, 0.0]])  # task 2: one class
        >>> round(pr_auc(y, np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.3], [0.1, 0.4]])), 4)
        0.8333
    """
    from sklearn.metrics import average_precision_score

    scores = [
        average_precision_score(labels, score)
        for labels, score in _two_class_tasks(y_true, y_score)
    ]
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


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination per task over present targets (NaN = missing), averaged
    over the tasks where it is defined (at least two present targets that are not all equal);
    NaN if there is no such task.

    Examples:
        >>> import numpy as np
        >>> y = np.array([[1.0, 5.0], [2.0, np.nan], [3.0, 5.0]])  # task 2 is constant: skipped
        >>> r2(y, np.array([[1.0, 0.0], [2.0, 0.0], [4.0, 0.0]]))  # 1 - 1 / 2
        0.5
    """
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    scores = []
    for task in range(y_true.shape[1]):
        valid = ~np.isnan(y_true[:, task])
        target, pred = y_true[valid, task], y_pred[valid, task]
        total = np.sum((target - target.mean()) ** 2) if target.size >= 2 else 0.0
        if total > 0:
            scores.append(1.0 - np.sum((target - pred) ** 2) / total)
    return float(np.mean(scores)) if scores else math.nan


def primary_metric(task_type: str) -> str:
    """The model-selection metric: ``"roc_auc"`` or ``"rmse"``.

    Examples:
        >>> primary_metric("classification"), primary_metric("regression")
        ('roc_auc', 'rmse')
    """
    return "roc_auc" if task_type == "classification" else "rmse"


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of :obj:`metric` is better (ROC-AUC, PR-AUC, R²) or worse
    (RMSE, MAE).

    Raises:
        ValueError: naming :obj:`metric` if it is not one of :data:`METRICS`.

    Examples:
        >>> higher_is_better("roc_auc"), higher_is_better("pr_auc"), higher_is_better("r2")
        (True, True, True)
        >>> higher_is_better("rmse"), higher_is_better("mae")
        (False, False)
    """
    try:
        return _HIGHER_IS_BETTER[metric]
    except KeyError:
        known = ", ".join(sorted(_HIGHER_IS_BETTER))
        raise ValueError(f"Unknown metric {metric!r} (known: {known})") from None


def check_metric(task_type: str, metric: str) -> str:
    """:obj:`metric` itself if it can select models of :obj:`task_type` (see :data:`METRICS`).

    Raises:
        ValueError: naming :obj:`metric` and the valid choices (or naming an unknown
            :obj:`task_type`).

    Examples:
        >>> check_metric("classification", "pr_auc")
        'pr_auc'
        >>> try:
        ...     check_metric("regression", "roc_auc")
        ... except ValueError as error:
        ...     print(error)
        Metric 'roc_auc' is not available for regression; choose one of: rmse, mae, r2
    """
    if task_type not in METRICS:
        known = ", ".join(METRICS)
        raise ValueError(f"Unknown task type {task_type!r} (known: {known})")
    choices = METRICS[task_type]
    if metric not in choices:
        raise ValueError(
            f"Metric {metric!r} is not available for {task_type}; "
            f"choose one of: {', '.join(choices)}"
        )
    return metric


def compute_metrics(task_type: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """All metrics of a task type (the names in :data:`METRICS`): ROC-AUC and PR-AUC, or
    RMSE, MAE and R².

    Examples:
        >>> import numpy as np
        >>> compute_metrics("regression", np.array([[1.0], [3.0]]), np.array([[2.0], [3.0]]))
        {'rmse': 0.7071..., 'mae': 0.5, 'r2': 0.5}
        >>> compute_metrics("classification", np.array([[0.0], [1.0]]), np.array([[0.2], [0.7]]))
        {'roc_auc': 1.0, 'pr_auc': 1.0}
    """
    if task_type == "classification":
        return {"roc_auc": roc_auc(y_true, y_pred), "pr_auc": pr_auc(y_true, y_pred)}
    return {"rmse": rmse(y_true, y_pred), "mae": mae(y_true, y_pred), "r2": r2(y_true, y_pred)}
