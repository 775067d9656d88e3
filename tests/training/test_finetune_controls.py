"""Fine-tuning controls: encoder freezing and staged unfreezing, balanced class weights,
early stopping, the selection metric, and per-molecule descriptors."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from pyg_molblend.data import from_smiles
from pyg_molblend.models import MoleBlend, MoleBlendPredictor, masked_bce_loss
from pyg_molblend.training.checkpoint import (
    CheckpointError,
    load_predictor,
    predictor_checkpoint,
    save_checkpoint,
)
from pyg_molblend.training.finetune import FinetuneConfig, finetune, predict
from pyg_molblend.training.utils import dense_batch

# the module, not the function pyg_molblend.training exports under the same name
finetune_module = importlib.import_module("pyg_molblend.training.finetune")

SMILES = ["CCO", "CCN", "CCC", "CCCl", "c1ccccc1", "CC=O", "CC(=O)O", "OCCO"]


def _tiny() -> MoleBlend:
    return MoleBlend(num_layers=2, channels=32, heads=4, num_kernels=8, head_channels=8)


def _graphs(labels, descriptors=None):
    graphs = []
    for i, (smiles, y) in enumerate(zip(SMILES, labels, strict=False)):
        graph = from_smiles(smiles)
        graph.y = torch.tensor([y], dtype=torch.float)
        if descriptors is not None:
            graph.descriptors = torch.tensor([descriptors[i]], dtype=torch.float)
        graphs.append(graph)
    return graphs


def _regression_data(descriptors=None):
    return _graphs([[float(i)] for i in range(len(SMILES))], descriptors)


def _config(**kwargs) -> FinetuneConfig:
    defaults = dict(epochs=2, batch_size=2, lr=1e-2, weight_decay=0.1, progress=False)
    return FinetuneConfig(**{**defaults, **kwargs})


def _encoder_state(predictor) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in predictor.encoder.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- freezing


def test_frozen_encoder_is_bit_identical_while_the_head_trains():
    data = _regression_data()
    predictor = MoleBlendPredictor(_tiny(), 1, "regression", dropout=0.1)
    encoder_before = _encoder_state(predictor)
    head_before = predictor.head[1].weight.detach().clone()
    # weight decay 0.1 would move every weight that AdamW touched
    finetune(predictor, data[:6], data[6:], data[6:], _config(freeze_encoder=True))
    assert _same(encoder_before, _encoder_state(predictor))
    assert not torch.equal(head_before, predictor.head[1].weight)
    # no backward pass through the frozen encoder at all
    assert all(p.grad is None for p in predictor.encoder.parameters())
    assert predictor.head[1].weight.grad is not None
    # the flags are restored for the caller
    assert all(p.requires_grad for p in predictor.parameters())


def test_unfreeze_after_trains_the_encoder_from_the_next_epoch(monkeypatch):
    data = _regression_data()
    predictor = MoleBlendPredictor(_tiny(), 1, "regression")
    initial_encoder = _encoder_state(predictor)
    initial_head = predictor.head[1].weight.detach().clone()
    seen = []  # (encoder state, head weight) at every evaluation, after each epoch first
    evaluate = finetune_module.evaluate

    def recording_evaluate(predictor, *args, **kwargs):
        seen.append((_encoder_state(predictor), predictor.head[1].weight.detach().clone()))
        return evaluate(predictor, *args, **kwargs)

    monkeypatch.setattr(finetune_module, "evaluate", recording_evaluate)
    result = finetune(predictor, data[:6], data[6:], data[6:], _config(unfreeze_after=1))
    assert result.epochs_run == 2 and len(seen) == 4  # 2 epochs, then valid and test
    (encoder_1, head_1), (encoder_2, _) = seen[0], seen[1]
    assert _same(initial_encoder, encoder_1)  # epoch 1: frozen, weight decay included
    assert not torch.equal(initial_head, head_1)  # but the head trained
    changed = {k for k in encoder_1 if not torch.equal(encoder_1[k], encoder_2[k])}
    # epoch 2 moved exactly the encoder parameters that a 2D loss reaches
    predictor.zero_grad()
    predictor.loss(Batch.from_data_list(data[:6])).backward()
    reached = {n for n, p in predictor.encoder.named_parameters() if p.grad is not None}
    assert "graph_token" in reached and changed == reached


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(epochs=3, unfreeze_after=0), "unfreeze_after .* got 0"),
        (dict(epochs=3, unfreeze_after=3), "epochs - 1 = 2, got 3"),
        (dict(epochs=3, unfreeze_after=True), "got True"),
        (dict(epochs=3, unfreeze_after=1, freeze_encoder=True), "give one of them"),
        (dict(freeze_encoder="yes"), "freeze_encoder must be True or False, got 'yes'"),
        (dict(patience=0), "patience must be .* got 0"),
        (dict(class_weights="inverse"), "class_weights must be None or 'balanced', got 'inv"),
        (dict(metric="f1"), "Unknown metric 'f1'"),
    ],
)
def test_config_refuses_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FinetuneConfig(**kwargs)


# ------------------------------------------------------------------------ class weights


def test_balanced_pos_weight_is_negatives_over_positives():
    predictor = MoleBlendPredictor(_tiny(), num_tasks=2)
    nan = float("nan")
    y = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, nan]])
    # task 0: 1 positive, 3 negatives; task 1: 2 positives, 1 negative (NaN not counted)
    assert predictor.fit_class_weights(y).tolist() == [3.0, 0.5]
    assert predictor.pos_weight.tolist() == [3.0, 0.5]

    batch = Batch.from_data_list(_graphs(y.tolist()))
    out = predictor(batch)
    valid = ~torch.isnan(batch.y)
    expected = torch.nn.BCEWithLogitsLoss(pos_weight=predictor.pos_weight.expand_as(out)[valid])(
        out[valid], batch.y[valid]
    )
    assert predictor.loss(batch, out).item() == pytest.approx(expected.item(), rel=1e-6)
    unweighted = masked_bce_loss(out, batch.y)
    assert not math.isclose(predictor.loss(batch, out).item(), unweighted.item())


def test_pos_weight_of_ones_equals_the_unweighted_loss():
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.1]])
    target = torch.tensor([[1.0, 0.0], [float("nan"), 1.0]])
    weighted = masked_bce_loss(logits, target, torch.ones(2))
    assert weighted.item() == pytest.approx(masked_bce_loss(logits, target).item(), rel=1e-6)


def test_a_task_without_both_classes_keeps_weight_one():
    predictor = MoleBlendPredictor(_tiny(), num_tasks=2)
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    with pytest.warns(UserWarning, match=r"Tasks \[1\] lack a class"):
        assert predictor.fit_class_weights(y).tolist() == [2.0, 1.0]


def test_finetune_balanced_fits_on_the_train_set_only():
    labels = [[1.0], [0.0], [0.0], [0.0], [1.0], [1.0], [0.0], [1.0]]
    data = _graphs(labels)
    predictor = MoleBlendPredictor(_tiny(), num_tasks=1)
    finetune(predictor, data[:4], data[4:], data[4:], _config(class_weights="balanced"))
    assert predictor.pos_weight.tolist() == [3.0]  # train: 1 positive, 3 negatives
    regression = MoleBlendPredictor(_tiny(), 1, "regression")
    with pytest.raises(ValueError, match=r"class_weights='balanced' .* does regression"):
        finetune(regression, data[:4], data[4:], data[4:], _config(class_weights="balanced"))


def test_pos_weight_travels_with_the_state_and_old_states_load(tmp_path):
    fitted = MoleBlendPredictor(_tiny(), num_tasks=2)
    old_state = fitted.state_dict()  # what a checkpoint without class weights holds
    assert "pos_weight" not in old_state
    fitted.fit_class_weights(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))
    assert fitted.state_dict()["pos_weight"].tolist() == [2.0, 0.5]

    fresh = MoleBlendPredictor(_tiny(), num_tasks=2)
    fresh.load_state_dict(fitted.state_dict())  # strict
    assert fresh.pos_weight.tolist() == [2.0, 0.5]
    fresh.load_state_dict(old_state)  # strict, no key: unweighted again
    assert fresh.pos_weight is None

    path = tmp_path / "model.pt"
    save_checkpoint(path, predictor_checkpoint(fitted))
    loaded, _ = load_predictor(path)
    assert loaded.pos_weight.tolist() == [2.0, 0.5]
    with pytest.raises(RuntimeError, match=r"pos_weight"):
        MoleBlendPredictor(_tiny(), num_tasks=3).load_state_dict(
            {**MoleBlendPredictor(_tiny(), 3).state_dict(), "pos_weight": torch.ones(2)}
        )


# ------------------------------------------------------------------------ multiclass


def test_multiclass_predictor_probabilities_loss_and_balanced_weights(tmp_path):
    nan = float("nan")
    labels = [[0.0, 1.0], [2.0, 1.0], [0.0, nan], [0.0, 0.0], [1.0, 1.0], [2.0, 0.0]]
    batch = Batch.from_data_list(_graphs(labels))
    predictor = MoleBlendPredictor(_tiny(), 2, "multiclass", num_classes=3).eval()
    assert predictor.num_outputs == 6
    prob = predictor.predict(batch).view(6, 2, 3)
    assert torch.allclose(prob.sum(-1), torch.ones(6, 2))
    out = predictor(batch)
    expected = torch.nn.functional.cross_entropy(
        out.view(6, 2, 3)[~batch.y.isnan()], batch.y[~batch.y.isnan()].long()
    )
    assert predictor.loss(batch, out).item() == pytest.approx(expected.item(), rel=1e-6)
    # task 0: 3 zeros, 1 one, 2 twos of 6 -> 6 / (3 * n_k); task 1: 2 zeros, 3 ones, no two
    with pytest.warns(UserWarning, match=r"\[\[1, 2\]\] have no training labels"):
        weight = predictor.fit_class_weights(batch.y)
    assert torch.allclose(weight, torch.tensor([[2 / 3, 2.0, 1.0], [5 / 6, 5 / 9, 1.0]]))
    weighted = predictor.loss(batch, out)
    assert not math.isclose(weighted.item(), expected.item())
    # The weights travel with the state; a state without them loads as unweighted.
    path = tmp_path / "model.pt"
    save_checkpoint(path, predictor_checkpoint(predictor))
    loaded, meta = load_predictor(path)
    assert (meta["task_type"], meta["num_classes"]) == ("multiclass", 3)
    assert torch.equal(loaded.class_weight, predictor.class_weight)
    assert loaded.pos_weight is None
    assert np.allclose(predict(loaded, _graphs(labels)), prob.flatten(1).numpy(), atol=1e-6)
    fresh = MoleBlendPredictor(_tiny(), 2, "multiclass", num_classes=3)
    fresh.load_state_dict(MoleBlendPredictor(_tiny(), 2, "multiclass", num_classes=3).state_dict())
    assert fresh.class_weight is None
    payload = predictor_checkpoint(predictor)
    payload["predictor"]["num_classes"] = 1  # a corrupted description
    save_checkpoint(tmp_path / "bad.pt", payload)
    with pytest.raises(CheckpointError, match=r"bad\.pt' describes no valid model: .*got 1"):
        load_predictor(tmp_path / "bad.pt")


@pytest.mark.parametrize(
    "task_type, num_classes, match",
    [
        ("multiclass", None, "needs num_classes of at least 2, got None"),
        ("multiclass", 1, "needs num_classes of at least 2, got 1"),
        ("regression", 3, "num_classes is for multiclass tasks"),
    ],
)
def test_multiclass_predictor_refuses_bad_num_classes(task_type, num_classes, match):
    with pytest.raises(ValueError, match=match):
        MoleBlendPredictor(_tiny(), 1, task_type, num_classes=num_classes)


# ------------------------------------------------------------- early stopping, metric


def _scripted_evaluate(monkeypatch, scores: list[dict[str, float]]):
    """evaluate returning the given validation metrics epoch after epoch (then the last
    ones), so that the scores are known in advance."""
    calls = []

    def fake(predictor, dataset, *args, **kwargs):
        metrics = scores[min(len(calls), len(scores) - 1)]
        calls.append(metrics)
        return dict(metrics), np.zeros((len(dataset), predictor.num_tasks), np.float32)

    monkeypatch.setattr(finetune_module, "evaluate", fake)
    return calls


def test_patience_stops_when_validation_does_not_improve(monkeypatch):
    data = _regression_data()
    _scripted_evaluate(monkeypatch, [{"rmse": 1.0, "mae": 1.0, "r2": 0.0}])  # constant
    predictor = MoleBlendPredictor(_tiny(), 1, "regression")
    result = finetune(predictor, data[:6], data[6:], data[6:], _config(epochs=10, patience=2))
    assert result.epochs_run == 3  # epoch 1 sets the best, 2 and 3 do not improve
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.best_epoch == 1


def test_patience_waits_for_the_unfreezing(monkeypatch):
    data = _regression_data()
    _scripted_evaluate(monkeypatch, [{"rmse": 1.0, "mae": 1.0, "r2": 0.0}])
    predictor = MoleBlendPredictor(_tiny(), 1, "regression")
    config = _config(epochs=10, patience=1, unfreeze_after=4)
    result = finetune(predictor, data[:6], data[6:], data[6:], config)
    assert result.epochs_run == 5  # epochs 2-4 (frozen) do not count; epoch 5 does


def test_no_patience_runs_every_epoch(monkeypatch):
    data = _regression_data()
    _scripted_evaluate(monkeypatch, [{"rmse": 1.0, "mae": 1.0, "r2": 0.0}])
    predictor = MoleBlendPredictor(_tiny(), 1, "regression")
    result = finetune(predictor, data[:6], data[6:], data[6:], _config(epochs=4))
    assert result.epochs_run == 4 and len(result.history) == 4


def test_the_configured_metric_selects_the_epoch(monkeypatch):
    data = _regression_data()
    scores = [  # rmse keeps improving, mae is best at epoch 1, r2 at epoch 2
        {"rmse": 3.0, "mae": 1.0, "r2": 0.1},
        {"rmse": 2.0, "mae": 2.0, "r2": 0.5},
        {"rmse": 1.0, "mae": 3.0, "r2": 0.2},
    ]
    for metric, best in [(None, 3), ("mae", 1), ("r2", 2)]:
        _scripted_evaluate(monkeypatch, scores)
        predictor = MoleBlendPredictor(_tiny(), 1, "regression")
        result = finetune(predictor, data[:6], data[6:], data[6:], _config(epochs=3, metric=metric))
        assert (result.metric, result.best_epoch) == (metric or "rmse", best)


def test_a_metric_of_the_other_task_type_is_refused():
    data = _regression_data()
    predictor = MoleBlendPredictor(_tiny(), 1, "regression")
    with pytest.raises(ValueError, match=r"'roc_auc' is not available for regression"):
        finetune(predictor, data[:6], data[6:], data[6:], _config(metric="roc_auc"))


# -------------------------------------------------------------------------- descriptors


def test_descriptors_change_the_output_and_are_standardised():
    torch.manual_seed(0)
    predictor = MoleBlendPredictor(_tiny(), 1, "regression", num_descriptors=2).eval()
    assert predictor.head[1].in_features == 32 + 2
    predictor.fit_descriptors(torch.tensor([[1.0, 5.0], [3.0, 5.0]]))
    # mean [2, 5]; std [1, 0 -> 1] (a constant column is not blown up)
    assert predictor.descriptor_mean.tolist() == [2.0, 5.0]
    assert predictor.descriptor_std.tolist() == [1.0, 1.0]
    a, b = from_smiles("CCO"), from_smiles("CCO")
    a.descriptors = torch.tensor([[1.0, 5.0]])
    b.descriptors = torch.tensor([[3.0, 7.0]])
    batch = Batch.from_data_list([a, b])
    out = predictor(batch)
    assert not torch.allclose(out[0], out[1])
    graph = predictor.encoder(batch)
    scaled = torch.tensor([[-1.0, 0.0], [1.0, 2.0]])
    expected = predictor.head(torch.cat([graph, scaled], dim=1))
    torch.testing.assert_close(out, expected)


def test_descriptor_output_ignores_padding_and_batch_mates():
    predictor = MoleBlendPredictor(_tiny(), 2, "regression", num_descriptors=3).eval()
    predictor.fit_descriptors(torch.randn(10, 3))
    graphs = [from_smiles(s) for s in ["CC(=O)Oc1ccccc1C(=O)O", "CCO", "C"]]
    for i, graph in enumerate(graphs):
        graph.descriptors = torch.tensor([[float(i), 2.0 * i, -1.0]])
    alone = predictor(Batch.from_data_list([graphs[1]]))
    crowd = predictor(Batch.from_data_list(graphs))
    torch.testing.assert_close(alone[0], crowd[1], atol=1e-5, rtol=1e-5)
    # the DenseMolBatch route of the training loop carries them too
    dense = dense_batch(Batch.from_data_list(graphs), "cpu", predictor.encoder.max_hops)
    assert torch.equal(dense.descriptors, torch.cat([g.descriptors for g in graphs]))
    torch.testing.assert_close(predictor(dense), crowd)
    # and predict, size-sorted batches restored to dataset order
    batched = predict(predictor, graphs, batch_size=2)
    one_by_one = np.concatenate([predict(predictor, [g]) for g in graphs])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-4, atol=1e-5)


def test_missing_or_misshapen_descriptors_are_refused():
    predictor = MoleBlendPredictor(_tiny(), 1, num_descriptors=2).eval()
    graph = from_smiles("CCO")
    with pytest.raises(ValueError, match=r"uses 2 descriptors per molecule but the batch has none"):
        predictor(Batch.from_data_list([graph]))
    graph.descriptors = torch.tensor([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match=r"shape \[1, 2\].*got \[1, 3\]"):
        predictor(Batch.from_data_list([graph]))
    with pytest.raises(ValueError, match=r"no descriptors"):
        MoleBlendPredictor(_tiny(), 1).fit_descriptors(torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"Descriptor 1 of training molecule 0 is nan"):
        predictor.fit_descriptors(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match=r"num_descriptors must be 0 or more"):
        MoleBlendPredictor(_tiny(), 1, num_descriptors=-1)


def test_descriptor_buffers_only_with_descriptors():
    plain = MoleBlendPredictor(_tiny(), 1)
    assert not any(k.startswith("descriptor_") for k in plain.state_dict())
    with_descriptors = MoleBlendPredictor(_tiny(), 1, num_descriptors=4)
    with_descriptors.fit_descriptors(torch.arange(8.0).view(2, 4))
    rebuilt = MoleBlendPredictor(_tiny(), 1, num_descriptors=4)
    rebuilt.load_state_dict(with_descriptors.state_dict())  # strict
    assert rebuilt.descriptor_mean.tolist() == [2.0, 3.0, 4.0, 5.0]
    assert rebuilt.descriptor_std.tolist() == [2.0, 2.0, 2.0, 2.0]


def test_finetune_fits_descriptors_on_the_train_set():
    descriptors = [[float(i), 10.0 * (i % 2)] for i in range(len(SMILES))]
    data = _regression_data(descriptors)
    predictor = MoleBlendPredictor(_tiny(), 1, "regression", num_descriptors=2)
    result = finetune(predictor, data[:4], data[4:], data[4:], _config())
    # train rows 0..3: column 0 is 0, 1, 2, 3; column 1 is 0, 10, 0, 10
    assert predictor.descriptor_mean.tolist() == [1.5, 5.0]
    assert predictor.descriptor_std.tolist() == pytest.approx([math.sqrt(1.25), 5.0])
    assert result.test_predictions.shape == (4, 1)
    del data[1].descriptors
    with pytest.raises(ValueError, match=r"training molecule 1 has descriptors None"):
        finetune(predictor, data[:4], data[4:], data[4:], _config())


class _Killed(Exception):
    pass


@pytest.mark.parametrize("controls", [{}, {"unfreeze_after": 2}, {"patience": 1}])
def test_interrupted_finetuning_resumes_to_the_uninterrupted_result(
    tmp_path, monkeypatch, controls
):
    data = _regression_data()
    train, valid = data[:6], data[6:]

    def run(state_path=None, resume=False, kill_after=None):
        torch.manual_seed(0)
        predictor = MoleBlendPredictor(_tiny(), 1, "regression", "2d", dropout=0.2)
        config = _config(
            epochs=4, state_path=state_path, resume=resume, seed=3, state_interval=0, **controls
        )
        if kill_after is not None:  # the process dies in the middle of an epoch
            calls = {"n": 0}
            step = finetune_module.train_step

            def dying(*args, **kwargs):
                calls["n"] += 1
                if calls["n"] > kill_after:
                    raise _Killed
                return step(*args, **kwargs)

            monkeypatch.setattr(finetune_module, "train_step", dying)
        try:
            return predictor, finetune(predictor, train, valid, valid, config)
        finally:
            monkeypatch.undo()

    straight, expected = run()
    state = tmp_path / "state.pt"
    with pytest.raises(_Killed):
        run(state, kill_after=4)  # 3 batches an epoch: dies in epoch 2
    written = torch.load(state, weights_only=True)
    assert written["kind"] == "finetune_state" and written["epoch"] == 1
    resumed, result = run(state, resume=True)
    assert not state.exists()  # removed once the run has ended
    assert result.history == expected.history and result.best_epoch == expected.best_epoch
    assert result.valid == expected.valid and result.epochs_run == expected.epochs_run
    assert _same(resumed.state_dict(), straight.state_dict())
    if "unfreeze_after" in controls:  # the encoder trains again after the resume
        assert all(p.requires_grad for p in resumed.encoder.parameters())


def test_resuming_refuses_other_settings_and_starts_fresh_without_a_state(
    tmp_path, capsys, monkeypatch
):
    data = _regression_data()
    state = tmp_path / "state.pt"

    def run(resume, **kwargs):
        torch.manual_seed(0)
        predictor = MoleBlendPredictor(_tiny(), 1, "regression", "2d")
        config = _config(epochs=3, state_path=str(state), resume=resume, state_interval=0, **kwargs)
        return finetune(predictor, data[:6], data[6:], None, config)

    fresh = run(resume=True)  # nothing to resume: an ordinary run
    assert "no training state at" in capsys.readouterr().out
    assert run(resume=False).history == fresh.history and not state.exists()

    # a state as a killed run leaves it: written after epoch 1
    class Stop(Exception):
        pass

    torch.manual_seed(0)
    predictor = MoleBlendPredictor(_tiny(), 1, "regression", "2d")
    original = finetune_module.evaluate
    calls = {"n": 0}

    def evaluate_then_stop(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 2's validation: epoch 1's state is on disk
            raise Stop
        return original(*args, **kwargs)

    monkeypatch.setattr(finetune_module, "evaluate", evaluate_then_stop)
    with pytest.raises(Stop):
        config = _config(epochs=3, state_path=str(state), state_interval=0)
        finetune(predictor, data[:6], data[6:], None, config)
    monkeypatch.undo()
    assert state.exists()
    with pytest.raises(ValueError, match=r"lr 0\.01 \(this run: 0\.02\)"):
        run(resume=True, lr=2e-2)
    with pytest.raises(ValueError, match="the train molecules"):
        torch.manual_seed(0)
        predictor = MoleBlendPredictor(_tiny(), 1, "regression", "2d")
        finetune(
            predictor,
            data[1:6],
            data[6:],
            None,
            _config(state_path=str(state), resume=True, epochs=3),
        )
    torch.manual_seed(1)  # other initial weights
    predictor = MoleBlendPredictor(_tiny(), 1, "regression", "2d")
    with pytest.raises(ValueError, match="weights at the start"):
        finetune(
            predictor,
            data[:6],
            data[6:],
            None,
            _config(epochs=3, state_path=str(state), resume=True),
        )
    assert state.exists()  # a refused resume leaves the state as it was
    with pytest.raises(ValueError, match="state_interval must be >= 0 seconds, got -1"):
        FinetuneConfig(state_interval=-1)
    assert run(resume=True).history == fresh.history
