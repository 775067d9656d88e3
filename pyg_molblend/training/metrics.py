"""Evaluation metrics of molecular property prediction."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = [
    "METRICS",
    "accuracy",
    "check_metric",
    "compute_metrics",
    "cross_entropy",
    "higher_is_better",
    "mae",
    "multiclass_roc_auc",
    "one_vs_rest",
    "pr_auc",
    "primary_metric",
    "r2",
    "rmse",
    "roc_auc",
]

METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("roc_auc", "pr_auc"),
    "multiclass": ("cross_entropy", "accuracy", "roc_auc"),
    "regression": ("rmse", "mae", "r2"),
}
"""The metrics :func:`compute_metrics` returns for each task type, any of which may select
the model on validation."""

_HIGHER_IS_BETTER = {
    "roc_auc": True,
    "pr_auc": True,
    "accuracy": True,
    "r2": True,
    "rmse": False,
    "mae": False,
    "cross_entropy": False,
}


def _two_class_tasks(y_true: np.ndarray, y_score: np.ndarray):
    """Yield ``(labels, scores)`` of each task whose present labels hold both classes."""
    y_true, y_score = np.asarray(y_true, float), np.asarray(y_score, float)
    for task in range(y_true.shape[1]):
        valid = ~np.isnan(y_true[:, task])
        labels = y_true[valid, task]
        if labels.size and 0 < labels.sum() < labels.size:
            yield labels, y_score[valid, task]


def _threshold_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives ``(tps, fps)`` at each distinct score taken as the
    threshold, from the highest score down: the points of scikit-learn's
    ``_binary_clf_curve``, which its ROC and precision-recall curves are made of."""
    if not np.isfinite(scores).all():
        raise ValueError(f"Scores must be finite, got {scores[~np.isfinite(scores)][0]}")
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    # The last position of each run of equal scores: a threshold counts all its ties.
    ends = np.append(np.flatnonzero(ranked[1:] != ranked[:-1]), ranked.size - 1)
    tps = np.cumsum(labels[order])[ends]
    return tps, ends + 1 - tps


def _roc_area(tps: np.ndarray, fps: np.ndarray) -> float:
    """Area under the ROC curve of one task from its :func:`_threshold_counts` (the
    trapezoids through every threshold, so a tie of a positive and a negative counts one
    half)."""
    tp, fp = np.append(0.0, tps), np.append(0.0, fps)
    return float(np.sum(np.diff(fp) * (tp[1:] + tp[:-1])) / (2.0 * tps[-1] * fps[-1]))


def _average_precision(tps: np.ndarray, fps: np.ndarray) -> float:
    """Average precision of one task from its :func:`_threshold_counts`: the precision at
    each threshold weighted by the recall it adds (no interpolation)."""
    return float(np.sum(np.diff(np.append(0.0, tps)) * tps / (tps + fps)) / tps[-1])


def _curve_means(
    y_true: np.ndarray, y_score: np.ndarray, *areas: Callable[[np.ndarray, np.ndarray], float]
) -> list[float]:
    """Each of :obj:`areas` per task with both classes (:func:`_two_class_tasks`), averaged
    over those tasks (NaN if there is none); one ranking of each task serves them all."""
    values = [
        [area(*_threshold_counts(labels, score)) for area in areas]
        for labels, score in _two_class_tasks(y_true, y_score)
    ]
    if not values:
        return [math.nan] * len(areas)
    return [float(np.mean(column)) for column in zip(*values, strict=True)]


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC-AUC per task over present labels (NaN = missing), averaged over the tasks that
    have both classes (MoleculeNet / OGB convention); NaN if no task has both.

    Equal to scikit-learn's ``roc_auc_score`` per task (a test compares them, ties
    included), computed in numpy: under 0.1 ms a task against several milliseconds, which
    a validation pass of ToxCast's 617 tasks paid every epoch.

    Examples:
        >>> import numpy as np
        >>> y = np.array([[0.0, 1.0], [1.0, np.nan], [1.0, 1.0]])  # task 2 has one class only
        >>> roc_auc(y, np.array([[0.1, 0.5], [0.9, 0.5], [0.8, 0.5]]))
        1.0
        >>> roc_auc(np.array([[0.0], [1.0], [1.0]]), np.array([[0.5], [0.5], [0.9]]))  # a tie
        0.75
    """
    return _curve_means(y_true, y_score, _roc_area)[0]


def pr_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve) per task over present
    labels (NaN = missing), averaged over the tasks that have both classes (OGB's metric for
    MUV and PCBA); NaN if no task has both. Equal to scikit-learn's
    ``average_precision_score`` per task, computed in numpy (see :func:`roc_auc`).

    Examples:
        >>> import numpy as np
        >>> y = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, np.nan], [0.0, 0.0]])  # task 2: one class
        >>> round(pr_auc(y, np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.3], [0.1, 0.4]])), 4)
        0.8333
    """
    return _curve_means(y_true, y_score, _average_precision)[0]


def _class_probabilities(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Multiclass labels ``[N, T]`` and probabilities ``[N, T * K]`` (task after task) as
    float labels and ``[N, T, K]`` probabilities."""
    y_true, y_prob = np.asarray(y_true, float), np.asarray(y_prob, float)
    num_tasks = y_true.shape[1]
    if num_tasks == 0 or y_prob.shape[1] % num_tasks:
        raise ValueError(
            f"Multiclass probabilities of shape {list(y_prob.shape)} do not split into "
            f"{num_tasks} tasks"
        )
    return y_true, y_prob.reshape(len(y_prob), num_tasks, -1)


def _mean_over_tasks(
    y_true: np.ndarray, y_prob: np.ndarray, score: Callable[[np.ndarray, np.ndarray], float]
) -> float:
    """``score(labels, probabilities)`` of each multiclass task over its present labels
    (integer labels ``[n]``, probabilities ``[n, K]``), averaged over the tasks that have
    labels; NaN if none has."""
    y_true, y_prob = _class_probabilities(y_true, y_prob)
    scores = []
    for task in range(y_true.shape[1]):
        valid = ~np.isnan(y_true[:, task])
        if valid.any():
            scores.append(float(score(y_true[valid, task].astype(int), y_prob[valid, task])))
    return float(np.mean(scores)) if scores else math.nan


def accuracy(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Multiclass accuracy: the fraction of present labels (NaN = missing) whose class
    has the highest probability, per task, averaged over the tasks with labels; NaN if
    none has. :obj:`y_prob` is ``[N, T * K]``, the :math:`K` class probabilities of each
    task side by side (as :meth:`~pyg_molblend.models.MoleBlendPredictor.predict`).

    Examples:
        >>> import numpy as np
        >>> y = np.array([[0.0], [2.0], [1.0]])
        >>> accuracy(y, np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1]]))
        0.6666666666666666
    """
    return _mean_over_tasks(y_true, y_prob, lambda labels, prob: (prob.argmax(-1) == labels).mean())


def cross_entropy(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Multiclass cross-entropy (log loss, natural log) of the present labels (NaN =
    missing), per task, averaged over the tasks with labels; NaN if none has.
    Probabilities are clipped to ``[1e-15, 1]`` as scikit-learn's ``log_loss`` does.
    :obj:`y_prob` is ``[N, T * K]`` (see :func:`accuracy`).

    Examples:
        >>> import numpy as np
        >>> y = np.array([[0.0], [1.0], [np.nan]])
        >>> round(cross_entropy(y, np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]])), 4)
        0.4581
    """

    def log_loss(labels: np.ndarray, prob: np.ndarray) -> float:
        picked = prob[np.arange(labels.size), labels]
        return -np.log(np.clip(picked, 1e-15, 1.0)).mean()

    return _mean_over_tasks(y_true, y_prob, log_loss)


def multiclass_roc_auc(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """One-vs-rest ROC-AUC of every class of every task over present labels (NaN =
    missing), macro-averaged over the (task, class) pairs whose labels hold the class
    and another one; NaN if there is none. :obj:`y_prob` is ``[N, T * K]`` (see
    :func:`accuracy`).

    Examples:
        >>> import numpy as np
        >>> y = np.array([[0.0], [1.0], [2.0], [2.0]])
        >>> p = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]])
        >>> multiclass_roc_auc(y, p)
        1.0
    """
    y_true, y_prob = _class_probabilities(y_true, y_prob)
    return roc_auc(one_vs_rest(y_true, y_prob.shape[2]), y_prob.reshape(len(y_prob), -1))


def one_vs_rest(y_true: np.ndarray, num_classes: int) -> np.ndarray:
    """Multiclass labels ``[N, T]`` (NaN = missing) as binary labels ``[N, T * K]``, one
    column per task and class in the order of the probabilities (1 where the molecule is
    of that class; NaN for every class of a missing label).

    Examples:
        >>> import numpy as np
        >>> one_vs_rest(np.array([[2.0], [np.nan]]), 3).tolist()
        [[0.0, 0.0, 1.0], [nan, nan, nan]]
    """
    y_true = np.asarray(y_true, float)
    one_hot = (y_true[:, :, None] == np.arange(num_classes)).astype(float)
    one_hot[np.isnan(y_true)] = np.nan
    return one_hot.reshape(len(y_true), -1)


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
    """The model-selection metric: ``"roc_auc"``, ``"cross_entropy"`` (multiclass, as
    chemprop) or ``"rmse"``.

    Examples:
        >>> primary_metric("classification"), primary_metric("multiclass")
        ('roc_auc', 'cross_entropy')
        >>> primary_metric("regression")
        'rmse'
    """
    if task_type not in METRICS:
        known = ", ".join(METRICS)
        raise ValueError(f"Unknown task type {task_type!r} (known: {known})")
    return METRICS[task_type][0]


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of :obj:`metric` is better (ROC-AUC, PR-AUC, accuracy, R²)
    or worse (RMSE, MAE, cross-entropy).

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
    """All metrics of a task type (the names in :data:`METRICS`): ROC-AUC and PR-AUC;
    cross-entropy, accuracy and one-vs-rest ROC-AUC (multiclass, :obj:`y_pred`
    ``[N, T * K]``); or RMSE, MAE and R².

    Examples:
        >>> import numpy as np
        >>> compute_metrics("regression", np.array([[1.0], [3.0]]), np.array([[2.0], [3.0]]))
        {'rmse': 0.7071..., 'mae': 0.5, 'r2': 0.5}
        >>> compute_metrics("classification", np.array([[0.0], [1.0]]), np.array([[0.2], [0.7]]))
        {'roc_auc': 1.0, 'pr_auc': 1.0}
    """
    if task_type == "classification":
        roc, precision = _curve_means(y_true, y_pred, _roc_area, _average_precision)
        return {"roc_auc": roc, "pr_auc": precision}
    if task_type == "multiclass":
        return {
            "cross_entropy": cross_entropy(y_true, y_pred),
            "accuracy": accuracy(y_true, y_pred),
            "roc_auc": multiclass_roc_auc(y_true, y_pred),
        }
    return {"rmse": rmse(y_true, y_pred), "mae": mae(y_true, y_pred), "r2": r2(y_true, y_pred)}
