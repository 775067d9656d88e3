"""Plots of fine-tuning runs: learning curves, regression parity plots and ROC curves.

matplotlib is optional (``pip install pyg-molblend[plot]``) and imported only when a plot
is drawn. The figures are drawn with the non-interactive Agg canvas on a bare
:class:`matplotlib.figure.Figure`, so the user's backend and :mod:`matplotlib.pyplot`'s
figure list are left alone (the figures are freed once no longer referenced; there is
nothing to close). Each PNG is written atomically, and each function returns the figure
it drew so that callers can inspect or restyle it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pyg_molblend.training.io import atomic_path
from pyg_molblend.training.metrics import higher_is_better, rmse

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["have_matplotlib", "plot_learning_curve", "plot_parity", "plot_roc"]

_MISSING = "matplotlib is needed for plots: pip install matplotlib"


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported (and so whether plots can be drawn).

    Examples:
        >>> have_matplotlib()
        True
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(**kwargs: Any) -> Figure:
    """A new figure on an Agg canvas, independent of pyplot and the global backend."""
    if not have_matplotlib():  # also when submodules are still cached after an uninstall
        raise ImportError(_MISSING)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(_MISSING) from None
    figure = Figure(**kwargs)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | os.PathLike) -> Figure:
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return figure


def _as_2d(y: Any) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    return y.reshape(-1, 1) if y.ndim == 1 else y


def _names(target_names: Sequence[str] | None, num_tasks: int) -> list[str]:
    if target_names is None:
        return [f"task {i}" for i in range(num_tasks)]
    names = [str(name) for name in target_names]
    if len(names) != num_tasks:
        raise ValueError(f"Got {len(names)} target names for {num_tasks} tasks")
    return names


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)  # JSON logs store NaN as null


def plot_learning_curve(
    history: Sequence[Mapping[str, Any]], metric: str, path: str | os.PathLike
) -> Figure:
    """Plot the training loss (left axis) and the validation :obj:`metric` (right axis)
    per epoch, mark the best epoch and write the figure to :obj:`path` as PNG.

    Args:
        history: one record per epoch with ``"epoch"``, ``"loss"`` and :obj:`metric`, as in
            :attr:`FinetuneResult.history <pyg_molblend.training.finetune.FinetuneResult>`
            (``None`` values, as read back from strict JSON, count as NaN).
        metric: the validation metric, e.g. ``"roc_auc"``; the best epoch is its maximum or
            minimum according to :func:`~pyg_molblend.training.metrics.higher_is_better`.
        path: the PNG file to write.

    Returns:
        The figure drawn: ``figure.axes[0]`` holds the loss line, ``figure.axes[1]`` the
        metric line and the best-epoch marker.

    Raises:
        ImportError: if matplotlib is not installed.
        ValueError: if :obj:`history` is empty, :obj:`metric` is unknown or missing from a
            record.

    Examples:
        >>> import tempfile, pathlib
        >>> history = [
        ...     {"epoch": 1, "loss": 0.7, "rmse": 1.2},
        ...     {"epoch": 2, "loss": 0.5, "rmse": 0.9},
        ...     {"epoch": 3, "loss": 0.4, "rmse": 1.0},
        ... ]
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "curve.png"
        >>> figure = plot_learning_curve(history, "rmse", path)
        >>> path.read_bytes()[:4]
        b'\\x89PNG'
        >>> figure.axes[1].get_title(loc="right")  # the lowest RMSE
        'best epoch 2: rmse 0.9'
    """
    better = higher_is_better(metric)
    if not history:
        raise ValueError("The history is empty: nothing to plot")
    for record in history:
        if metric not in record:
            raise ValueError(
                f"Metric {metric!r} is missing from the history record {dict(record)!r}"
            )
    epochs = np.array([record["epoch"] for record in history])
    losses = np.array([_float(record["loss"]) for record in history])
    values = np.array([_float(record[metric]) for record in history])

    figure = _figure(figsize=(6.4, 4.0))
    loss_axes = figure.add_subplot()
    metric_axes = loss_axes.twinx()
    loss_line = loss_axes.plot(epochs, losses, color="tab:blue", marker=".", label="train loss")
    metric_line = metric_axes.plot(
        epochs, values, color="tab:orange", marker=".", label=f"valid {metric}"
    )
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("train loss", color="tab:blue")
    metric_axes.set_ylabel(f"valid {metric}", color="tab:orange")
    handles = loss_line + metric_line
    if not np.isnan(values).all():
        best = int(np.nanargmax(values) if better else np.nanargmin(values))
        handles += metric_axes.plot(
            [epochs[best]],
            [values[best]],
            linestyle="none",
            marker="*",
            markersize=14,
            color="tab:red",
            label="best epoch",
        )
        metric_axes.axvline(epochs[best], color="tab:red", linestyle=":", linewidth=1)
        metric_axes.set_title(
            f"best epoch {epochs[best]}: {metric} {values[best]:.4g}", loc="right"
        )
    loss_axes.legend(handles=handles, loc="best")
    return _save(figure, path)


def plot_parity(
    y_true: Any,
    y_pred: Any,
    target_names: Sequence[str] | None,
    path: str | os.PathLike,
) -> Figure:
    """Regression parity plot: predicted against true value, one panel per task, with the
    line y = x and the task's RMSE in the panel title. Missing (NaN) targets are left out.

    Args:
        y_true: targets of shape ``[num_molecules, num_tasks]`` (or ``[num_molecules]``).
        y_pred: predictions of the same shape.
        target_names: one name per task (``None``: ``"task 0"``, ``"task 1"``, ...).
        path: the PNG file to write.

    Returns:
        The figure drawn, one axes per task (in task order) holding the scatter of the
        present ``(true, predicted)`` pairs as its first collection.

    Raises:
        ImportError: if matplotlib is not installed.
        ValueError: if the shapes or the number of names do not match.

    Examples:
        >>> import numpy as np, tempfile, pathlib
        >>> y = np.array([[1.0, 0.5], [2.0, np.nan], [3.0, 1.5]])
        >>> pred = np.array([[1.5, 0.5], [2.0, 9.0], [2.5, 1.0]])
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "parity.png"
        >>> figure = plot_parity(y, pred, ["logS", "logP"], path)
        >>> [axes.get_title() for axes in figure.axes]
        ['logS\\nRMSE 0.4082 (n = 3)', 'logP\\nRMSE 0.3536 (n = 2)']
    """
    y_true, y_pred = _as_2d(y_true), _as_2d(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"Targets {y_true.shape} and predictions {y_pred.shape} differ")
    num_tasks = y_true.shape[1]
    names = _names(target_names, num_tasks)
    cols = min(num_tasks, 4)
    rows = math.ceil(num_tasks / cols)
    figure = _figure(figsize=(3.6 * cols, 3.6 * rows))
    for task, name in enumerate(names):
        axes = figure.add_subplot(rows, cols, task + 1)
        present = ~np.isnan(y_true[:, task])
        true, pred = y_true[present, task], y_pred[present, task]
        axes.scatter(true, pred, s=12, alpha=0.6, edgecolors="none")
        finite = np.concatenate([true, pred])
        finite = finite[np.isfinite(finite)]
        low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        margin = 0.05 * (high - low) or 0.5
        low, high = low - margin, high + margin
        axes.plot([low, high], [low, high], color="gray", linestyle="--", linewidth=1)
        axes.set_xlim(low, high)
        axes.set_ylim(low, high)
        axes.set_aspect("equal")
        error = rmse(true[:, None], pred[:, None])
        axes.set_title(f"{name}\nRMSE {error:.4g} (n = {true.size})")
        axes.set_xlabel("true")
        axes.set_ylabel("predicted")
    return _save(figure, path)


def plot_roc(
    y_true: Any,
    y_score: Any,
    target_names: Sequence[str] | None,
    path: str | os.PathLike,
) -> Figure:
    """ROC curves (:func:`sklearn.metrics.roc_curve`) over present labels (NaN = missing),
    one curve per task that has both classes, with the task's AUC in the legend; the tasks
    left out (one class only) are named in the legend title.

    Args:
        y_true: binary labels of shape ``[num_molecules, num_tasks]`` (or
            ``[num_molecules]``), NaN where missing.
        y_score: scores of the same shape (probabilities or logits).
        target_names: one name per task (``None``: ``"task 0"``, ``"task 1"``, ...).
        path: the PNG file to write.

    Returns:
        The figure drawn: its single axes holds one line per plotted task, labelled
        ``"<name> (AUC 0.xxx)"``, then the chance diagonal, labelled ``"chance"``.

    Raises:
        ImportError: if matplotlib is not installed.
        ValueError: if the shapes or the number of names do not match.

    Examples:
        >>> import numpy as np, tempfile, pathlib
        >>> y = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, np.nan], [0.0, 1.0]])
        >>> score = np.array([[0.1, 0.2], [0.8, 0.4], [0.3, 0.9], [0.4, 0.5]])
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "roc.png"
        >>> figure = plot_roc(y, score, ["BBBP", "toxic"], path)
        >>> [line.get_label() for line in figure.axes[0].lines]
        ['BBBP (AUC 0.750)', 'chance']
        >>> figure.axes[0].get_legend().get_title().get_text()
        'skipped (one class): toxic'
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    y_true, y_score = _as_2d(y_true), _as_2d(y_score)
    if y_true.shape != y_score.shape:
        raise ValueError(f"Labels {y_true.shape} and scores {y_score.shape} differ")
    names = _names(target_names, y_true.shape[1])
    figure = _figure(figsize=(5.0, 5.0))
    axes = figure.add_subplot()
    skipped = []
    for task, name in enumerate(names):
        present = ~np.isnan(y_true[:, task])
        labels, scores = y_true[present, task], y_score[present, task]
        if not (labels.size and 0 < labels.sum() < labels.size):
            skipped.append(name)
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        axes.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(labels, scores):.3f})")
    axes.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="chance")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    title = f"skipped (one class): {', '.join(skipped)}" if skipped else None
    axes.legend(loc="lower right", fontsize="small", title=title, title_fontsize="small")
    return _save(figure, path)
