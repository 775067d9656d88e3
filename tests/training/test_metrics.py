"""Evaluation metrics: hand-computed values, agreement with scikit-learn on data with
missing labels, the tasks left out, and the metric names model selection accepts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    log_loss,
    r2_score,
    roc_auc_score,
)

from pyg_molblend.training.metrics import (
    METRICS,
    accuracy,
    check_metric,
    compute_metrics,
    cross_entropy,
    higher_is_better,
    mae,
    multiclass_roc_auc,
    one_vs_rest,
    pr_auc,
    primary_metric,
    r2,
    rmse,
    roc_auc,
)


def _with_missing(rng: np.random.Generator, shape: tuple[int, int], kind: str) -> np.ndarray:
    y = rng.integers(0, 2, shape).astype(float) if kind == "binary" else rng.normal(size=shape)
    y[rng.random(shape) < 0.3] = np.nan
    return y


def test_pr_auc_hand_computed():
    # Ranked by score: 1 (P@1 = 1), 0, 1 (P@3 = 2/3), 0 -> AP = (1 + 2/3) / 2.
    y = np.array([[1.0], [0.0], [1.0], [0.0]])
    score = np.array([[0.9], [0.8], [0.3], [0.1]])
    assert pr_auc(y, score) == pytest.approx((1 + 2 / 3) / 2)
    assert pr_auc(y, score) == pytest.approx(0.8333333333)


def test_pr_auc_is_the_mean_over_tasks_of_sklearn_on_present_labels():
    rng = np.random.default_rng(0)
    y, score = _with_missing(rng, (60, 4), "binary"), rng.random((60, 4))
    expected = []
    for task in range(4):
        present = ~np.isnan(y[:, task])
        expected.append(average_precision_score(y[present, task], score[present, task]))
    assert pr_auc(y, score) == pytest.approx(np.mean(expected))
    # Not just the pooled value, nor the value with missing labels read as negatives.
    assert pr_auc(y, score) != pytest.approx(
        average_precision_score(np.nan_to_num(y).ravel(), score.ravel())
    )


def test_pr_auc_leaves_out_tasks_with_one_class():
    y = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, np.nan], [0.0, 1.0]])
    score = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.3], [0.1, 0.4]])
    assert pr_auc(y, score) == pytest.approx(average_precision_score(y[:, 0], score[:, 0]))
    assert pr_auc(y, score) == pytest.approx(0.8333333333)


def test_pr_auc_and_roc_auc_are_nan_when_no_task_has_both_classes():
    y = np.array([[1.0, 0.0], [1.0, np.nan], [np.nan, 0.0]])
    score = np.array([[0.2, 0.3], [0.4, 0.5], [0.6, 0.7]])
    assert math.isnan(pr_auc(y, score))
    assert math.isnan(roc_auc(y, score))
    assert math.isnan(pr_auc(np.full((3, 1), np.nan), score[:, :1]))


def test_roc_auc_matches_sklearn_on_present_labels():
    rng = np.random.default_rng(1)
    y, score = _with_missing(rng, (50, 3), "binary"), rng.random((50, 3))
    expected = [
        roc_auc_score(y[~np.isnan(y[:, t]), t], score[~np.isnan(y[:, t]), t]) for t in range(3)
    ]
    assert roc_auc(y, score) == pytest.approx(np.mean(expected))


@pytest.mark.parametrize("levels", [3, 20, None])
def test_roc_auc_and_pr_auc_equal_sklearn_per_task_with_ties(levels):
    # Scores rounded to a few levels tie across classes; float32 as predictions come.
    rng = np.random.default_rng(levels or 0)
    y = _with_missing(rng, (200, 40), "binary")
    score = rng.random((200, 40)).astype(np.float32)
    if levels is not None:
        score = np.round(score * levels) / levels
    for task in range(40):
        present = ~np.isnan(y[:, task])
        labels, scores = y[present, task : task + 1], score[present, task : task + 1]
        assert roc_auc(labels, scores) == pytest.approx(
            roc_auc_score(labels[:, 0], scores[:, 0]), abs=1e-12
        )
        assert pr_auc(labels, scores) == pytest.approx(
            average_precision_score(labels[:, 0], scores[:, 0]), abs=1e-12
        )
    with pytest.raises(ValueError, match="finite, got nan"):
        roc_auc(np.array([[0.0], [1.0]]), np.array([[0.5], [np.nan]]))


def test_r2_is_the_mean_over_tasks_of_sklearn_on_present_targets():
    rng = np.random.default_rng(2)
    y = _with_missing(rng, (40, 3), "real")
    pred = np.nan_to_num(y) + rng.normal(scale=0.5, size=y.shape)
    expected = []
    for task in range(3):
        present = ~np.isnan(y[:, task])
        expected.append(r2_score(y[present, task], pred[present, task]))
    assert r2(y, pred) == pytest.approx(np.mean(expected))


def test_r2_hand_computed_and_undefined_tasks_left_out():
    # Task 1: targets 1, 2, 3 (sum of squares about the mean 2), residuals 0, 0, 1 -> 1 - 1/2.
    # Task 2: constant targets, task 3: a single present target; both are left out.
    y = np.array([[1.0, 5.0, np.nan], [2.0, 5.0, 7.0], [3.0, np.nan, np.nan]])
    pred = np.array([[1.0, 0.0, 0.0], [2.0, 1.0, 0.0], [4.0, 2.0, 0.0]])
    assert r2(y, pred) == pytest.approx(0.5)
    assert math.isnan(r2(y[:, 1:], pred[:, 1:]))


def test_compute_metrics_returns_exactly_the_selectable_metrics():
    rng = np.random.default_rng(3)
    y, score = _with_missing(rng, (30, 2), "binary"), rng.random((30, 2))
    out = compute_metrics("classification", y, score)
    assert tuple(out) == METRICS["classification"] == ("roc_auc", "pr_auc")
    assert out["roc_auc"] == roc_auc(y, score) and out["pr_auc"] == pr_auc(y, score)

    y = np.array([[1.0], [3.0], [np.nan]])
    pred = np.array([[2.0], [3.0], [100.0]])
    out = compute_metrics("regression", y, pred)
    assert tuple(out) == METRICS["regression"] == ("rmse", "mae", "r2")
    assert out == pytest.approx({"rmse": math.sqrt(0.5), "mae": 0.5, "r2": 0.5})
    assert (out["rmse"], out["mae"]) == (rmse(y, pred), mae(y, pred))


@pytest.mark.parametrize(
    "metric, expected",
    [
        ("roc_auc", True),
        ("pr_auc", True),
        ("accuracy", True),
        ("r2", True),
        ("rmse", False),
        ("mae", False),
        ("cross_entropy", False),
    ],
)
def test_higher_is_better(metric, expected):
    assert higher_is_better(metric) is expected


def test_higher_is_better_covers_every_selectable_metric_and_rejects_others():
    for names in METRICS.values():
        for name in names:
            higher_is_better(name)  # no error
    with pytest.raises(ValueError, match="'f1'"):
        higher_is_better("f1")


def test_check_metric_accepts_the_metrics_of_the_task_type():
    for task_type, names in METRICS.items():
        for name in names:
            assert check_metric(task_type, name) == name


@pytest.mark.parametrize(
    "task_type, metric, choices",
    [
        ("regression", "roc_auc", "rmse, mae, r2"),
        ("classification", "rmse", "roc_auc, pr_auc"),
        ("classification", "f1", "roc_auc, pr_auc"),
    ],
)
def test_check_metric_names_the_metric_and_the_choices(task_type, metric, choices):
    with pytest.raises(ValueError, match=f"'{metric}'.*{task_type}.*{choices}"):
        check_metric(task_type, metric)


def test_check_metric_rejects_an_unknown_task_type():
    with pytest.raises(ValueError, match="'ranking'"):
        check_metric("ranking", "rmse")


def _multiclass(rng: np.random.Generator, num: int, tasks: int, classes: int):
    y = rng.integers(0, classes, (num, tasks)).astype(float)
    y[rng.random((num, tasks)) < 0.25] = np.nan
    logits = rng.normal(size=(num, tasks, classes))
    prob = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return y, prob


def test_multiclass_metrics_match_sklearn_per_task_on_present_labels():
    rng = np.random.default_rng(7)
    y, prob = _multiclass(rng, 60, 2, 4)
    y[:, 1][y[:, 1] == 3] = 2.0  # task 1 never has class 3: its one-vs-rest AUC is left out
    flat = prob.reshape(60, -1)
    acc, ce, auc = [], [], []
    for task in range(2):
        valid = ~np.isnan(y[:, task])
        labels, p = y[valid, task].astype(int), prob[valid, task]
        acc.append(accuracy_score(labels, p.argmax(-1)))
        ce.append(log_loss(labels, p, labels=range(4)))
        auc += [roc_auc_score(labels == k, p[:, k]) for k in range(4) if 0 < (labels == k).sum()]
    assert accuracy(y, flat) == pytest.approx(np.mean(acc))
    assert cross_entropy(y, flat) == pytest.approx(np.mean(ce))
    assert len(auc) == 7 and multiclass_roc_auc(y, flat) == pytest.approx(np.mean(auc))
    out = compute_metrics("multiclass", y, flat)
    assert tuple(out) == METRICS["multiclass"] == ("cross_entropy", "accuracy", "roc_auc")
    assert primary_metric("multiclass") == "cross_entropy"
    nothing = np.full((3, 1), np.nan)
    assert all(
        math.isnan(v) for v in compute_metrics("multiclass", nothing, np.ones((3, 2)) / 2).values()
    )
    with pytest.raises(ValueError, match="do not split into 2 tasks"):
        accuracy(y, flat[:, :7])


def test_one_vs_rest_by_hand():
    out = one_vs_rest(np.array([[0.0, 2.0], [np.nan, 1.0]]), 3)
    expected = [[1, 0, 0, 0, 0, 1], [np.nan, np.nan, np.nan, 0, 1, 0]]
    np.testing.assert_array_equal(out, np.array(expected, dtype=float))
