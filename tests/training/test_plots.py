"""Plots of fine-tuning runs: PNG files written atomically, the plotted data equal to the
inputs (and to scikit-learn's ROC curves), and a clear error without matplotlib."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from pyg_molblend.training.plots import (
    have_matplotlib,
    plot_learning_curve,
    plot_parity,
    plot_roc,
)

PNG = b"\x89PNG\r\n\x1a\n"

HISTORY = [
    {"epoch": 1, "loss": 0.9, "roc_auc": 0.61, "rmse": 1.4},
    {"epoch": 2, "loss": 0.6, "roc_auc": 0.74, "rmse": 1.1},
    {"epoch": 3, "loss": 0.5, "roc_auc": 0.71, "rmse": 0.8},
    {"epoch": 4, "loss": 0.45, "roc_auc": 0.69, "rmse": 0.95},
]


@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib")


def _only_file(directory, path):
    """The PNG is there, complete, and no temporary file is left beside it."""
    assert sorted(directory.iterdir()) == [path]
    assert path.read_bytes()[:8] == PNG


def test_have_matplotlib(mpl, monkeypatch):
    assert have_matplotlib() is True
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert have_matplotlib() is False


@pytest.mark.parametrize("metric, best_epoch, best_value", [("roc_auc", 2, 0.74), ("rmse", 3, 0.8)])
def test_learning_curve_plots_the_history_and_marks_the_best_epoch(
    mpl, tmp_path, metric, best_epoch, best_value
):
    path = tmp_path / "curve.png"
    figure = plot_learning_curve(HISTORY, metric, path)
    _only_file(tmp_path, path)

    loss_axes, metric_axes = figure.axes
    loss_line = loss_axes.lines[0]
    np.testing.assert_array_equal(loss_line.get_xdata(), [1, 2, 3, 4])
    np.testing.assert_array_equal(loss_line.get_ydata(), [0.9, 0.6, 0.5, 0.45])
    metric_line, best = metric_axes.lines[:2]
    np.testing.assert_array_equal(metric_line.get_xdata(), [1, 2, 3, 4])
    np.testing.assert_array_equal(metric_line.get_ydata(), [h[metric] for h in HISTORY])
    assert best.get_label() == "best epoch"
    assert (list(best.get_xdata()), list(best.get_ydata())) == ([best_epoch], [best_value])
    assert metric_axes.get_title(loc="right") == f"best epoch {best_epoch}: {metric} {best_value}"


def test_learning_curve_reads_null_as_nan_and_skips_it_for_the_best_epoch(mpl, tmp_path):
    history = [
        {"epoch": 1, "loss": 0.9, "pr_auc": None},
        {"epoch": 2, "loss": 0.7, "pr_auc": 0.3},
        {"epoch": 3, "loss": None, "pr_auc": 0.2},
    ]
    figure = plot_learning_curve(history, "pr_auc", tmp_path / "curve.png")
    values = figure.axes[1].lines[0].get_ydata()
    assert math.isnan(values[0]) and list(values[1:]) == [0.3, 0.2]
    assert math.isnan(figure.axes[0].lines[0].get_ydata()[2])
    assert list(figure.axes[1].lines[1].get_xdata()) == [2]


def test_learning_curve_without_any_defined_value_has_no_best_marker(mpl, tmp_path):
    history = [{"epoch": 1, "loss": 0.9, "roc_auc": math.nan}]
    figure = plot_learning_curve(history, "roc_auc", tmp_path / "curve.png")
    assert [line.get_label() for line in figure.axes[1].lines] == ["valid roc_auc"]
    assert (tmp_path / "curve.png").read_bytes()[:8] == PNG


def test_learning_curve_rejects_bad_input(mpl, tmp_path):
    with pytest.raises(ValueError, match="'accuracy'"):
        plot_learning_curve(HISTORY, "accuracy", tmp_path / "a.png")
    with pytest.raises(ValueError, match="'pr_auc' is missing"):
        plot_learning_curve(HISTORY, "pr_auc", tmp_path / "b.png")
    with pytest.raises(ValueError, match="empty"):
        plot_learning_curve([], "rmse", tmp_path / "c.png")
    assert list(tmp_path.iterdir()) == []


def test_parity_plots_the_present_pairs_of_each_task(mpl, tmp_path):
    rng = np.random.default_rng(0)
    y = rng.normal(size=(30, 3))
    y[rng.random(y.shape) < 0.3] = np.nan
    pred = np.nan_to_num(y) + rng.normal(scale=0.3, size=y.shape)
    path = tmp_path / "parity.png"
    figure = plot_parity(y, pred, ["a", "b", "c"], path)
    _only_file(tmp_path, path)

    assert len(figure.axes) == 3
    for task, axes in enumerate(figure.axes):
        present = ~np.isnan(y[:, task])
        expected = np.column_stack([y[present, task], pred[present, task]])
        np.testing.assert_array_equal(axes.collections[0].get_offsets(), expected)
        error = math.sqrt(np.mean((y[present, task] - pred[present, task]) ** 2))
        name = "abc"[task]
        assert axes.get_title() == f"{name}\nRMSE {error:.4g} (n = {present.sum()})"
        diagonal = axes.lines[0]
        np.testing.assert_array_equal(diagonal.get_xdata(), diagonal.get_ydata())
        low, high = diagonal.get_xdata()
        assert low < np.min(expected) and high > np.max(expected)


def test_parity_hand_computed_title_and_one_dimensional_input(mpl, tmp_path):
    figure = plot_parity([1.0, 2.0, np.nan], [2.0, 2.0, 5.0], None, tmp_path / "p.png")
    (axes,) = figure.axes
    np.testing.assert_array_equal(axes.collections[0].get_offsets(), [[1.0, 2.0], [2.0, 2.0]])
    assert axes.get_title() == f"task 0\nRMSE {math.sqrt(0.5):.4g} (n = 2)"


def test_parity_rejects_mismatched_input(mpl, tmp_path):
    with pytest.raises(ValueError, match="2 target names for 1 tasks"):
        plot_parity([[1.0]], [[1.0]], ["a", "b"], tmp_path / "p.png")
    with pytest.raises(ValueError, match="differ"):
        plot_parity([[1.0], [2.0]], [[1.0]], ["a"], tmp_path / "p.png")


def test_roc_curves_equal_sklearn_and_skip_one_class_tasks(mpl, tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (40, 3)).astype(float)
    y[rng.random(y.shape) < 0.25] = np.nan
    y[:, 1] = np.where(np.isnan(y[:, 1]), np.nan, 1.0)  # one class only
    score = rng.random(y.shape)
    path = tmp_path / "roc.png"
    figure = plot_roc(y, score, ["p", "q", "r"], path)
    _only_file(tmp_path, path)

    (axes,) = figure.axes
    curves = [line for line in axes.lines if line.get_label() != "chance"]
    assert len(curves) == 2
    for line, task, name in zip(curves, [0, 2], ["p", "r"], strict=True):
        present = ~np.isnan(y[:, task])
        fpr, tpr, _ = roc_curve(y[present, task], score[present, task])
        np.testing.assert_array_equal(line.get_xdata(), fpr)
        np.testing.assert_array_equal(line.get_ydata(), tpr)
        auc = roc_auc_score(y[present, task], score[present, task])
        assert line.get_label() == f"{name} (AUC {auc:.3f})"
    assert axes.get_legend().get_title().get_text() == "skipped (one class): q"


def test_roc_hand_computed(mpl, tmp_path):
    # Positives scored 0.8 and 0.3, negatives 0.4 and 0.1: 3 of 4 pairs ordered -> AUC 0.75.
    figure = plot_roc([0.0, 1.0, 1.0, 0.0], [0.1, 0.8, 0.3, 0.4], ["t"], tmp_path / "r.png")
    line = figure.axes[0].lines[0]
    assert line.get_label() == "t (AUC 0.750)"
    np.testing.assert_array_equal(line.get_xdata(), [0.0, 0.0, 0.5, 0.5, 1.0])
    np.testing.assert_array_equal(line.get_ydata(), [0.0, 0.5, 0.5, 1.0, 1.0])
    assert figure.axes[0].get_legend().get_title().get_text() == ""


def test_plots_leave_the_backend_and_pyplot_alone(mpl, tmp_path):
    backend = mpl.get_backend()
    pyplot = sys.modules.get("matplotlib.pyplot")
    figures = pyplot.get_fignums() if pyplot else []
    plot_learning_curve(HISTORY, "rmse", tmp_path / "a.png")
    plot_parity([1.0, 2.0], [1.5, 2.5], ["t"], tmp_path / "b.png")
    plot_roc([0.0, 1.0], [0.2, 0.7], ["t"], tmp_path / "c.png")
    assert mpl.get_backend() == backend
    if pyplot:
        assert pyplot.get_fignums() == figures
    else:
        assert "matplotlib.pyplot" not in sys.modules


@pytest.mark.parametrize(
    "plot, args",
    [
        (plot_learning_curve, (HISTORY, "rmse")),
        (plot_parity, ([1.0, 2.0], [1.0, 2.0], ["t"])),
        (plot_roc, ([0.0, 1.0], [0.2, 0.7], ["t"])),
    ],
)
def test_a_clear_error_without_matplotlib(tmp_path, monkeypatch, plot, args):
    try:  # submodules imported earlier stay cached: they must not hide the missing package
        import matplotlib.backends.backend_agg
        import matplotlib.figure  # noqa: F401
    except ImportError:
        pass
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert have_matplotlib() is False
    with pytest.raises(
        ImportError, match=r"matplotlib is needed for plots: pip install matplotlib"
    ):
        plot(*args, tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []
