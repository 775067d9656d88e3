"""``pyg-molblend predict``, ensembles and uncertainty (issue 13)."""

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import pyg_molblend
from pyg_molblend.cli import main
from pyg_molblend.data import from_smiles
from pyg_molblend.models import MoleBlend, MoleBlendPredictor
from pyg_molblend.training.checkpoint import (
    load_checkpoint,
    load_predictor,
    predictor_checkpoint,
    save_checkpoint,
)
from pyg_molblend.training.finetune import predict
from pyg_molblend.training.inference import ModelSet
from pyg_molblend.transforms import AddConformer, AddShortestPath

DATA = Path(__file__).parents[1] / "assets"
BBBP = str(DATA / "tiny_bbbp.csv")
ESOL = str(DATA / "tiny_esol.csv")
FAST = ["--epochs", "1", "--batch-size", "16", "--from-scratch"]
LIBRARY = [
    ("a1", "CCO"),
    ("a2", "C1CC"),  # invalid: unclosed ring
    ("a3", "c1ccccc1O"),
    ("a4", "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"),  # 40 heavy atoms
    ("a5", "CC(=O)Nc1ccc(O)cc1"),
]


def _finetune(root: Path, out: Path, *extra: str, csv=ESOL, targets="logS", task="regression"):
    args = ["finetune", "--csv", csv, "--targets", targets, "--task", task]
    args += ["--root", str(root / "data"), "--out", str(out), "--split", "random", *FAST, *extra]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A single ESOL model and a 2-member ensemble of the same seed and split."""
    root = tmp_path_factory.mktemp("runs")
    single = _finetune(root, root / "single")
    ensemble = _finetune(root, root / "ensemble", "--ensemble-size", "2")
    return single, ensemble


@pytest.fixture
def library(tmp_path) -> Path:
    path = tmp_path / "library.csv"
    pd.DataFrame(LIBRARY, columns=["id", "SMILES"]).to_csv(path, index=False)
    return path


def _reference(model: Path, smiles: list[str]) -> np.ndarray:
    predictor, _ = load_predictor(model)
    return predict(predictor, [AddShortestPath()(from_smiles(s)) for s in smiles])


#: The counted warning of --skip-invalid over LIBRARY with --max-atoms 30.
SKIPPED_TWO = r"2 molecules of .* not predicted \(1 invalid SMILES, 1 above max_atoms=30\)"


def test_predict_keeps_rows_columns_and_order_with_status(runs, library, tmp_path, capsys):
    single, _ = runs
    out = tmp_path / "preds.csv"
    args = ["predict", "--checkpoint", str(single / "model.pt"), "--smiles", str(library)]
    args += ["--out", str(out), "--skip-invalid", "--max-atoms", "30", "--chunk-size", "2"]
    with pytest.warns(UserWarning, match=SKIPPED_TWO):
        assert main(args) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == ["id", "SMILES", "logS", "status"]
    assert table["id"].tolist() == [row[0] for row in LIBRARY]
    assert table["status"].tolist() == ["ok", "invalid_smiles", "ok", "too_many_atoms", "ok"]
    assert table["logS"][1] == "" and table["logS"][3] == ""
    ok = [0, 2, 4]
    expected = _reference(single / "model.pt", [LIBRARY[i][1] for i in ok])[:, 0]
    np.testing.assert_allclose(table["logS"][ok].astype(float), expected, rtol=1e-5)
    captured = capsys.readouterr()
    assert "predicted 3 of 5 molecules" in captured.out
    # the bar starts from the file's 6 lines (header included) and ends at the 5 rows, full
    bars = [x for x in captured.err.replace("\r", "\n").splitlines() if x.startswith("predict:")]
    assert "/6 " in bars[0] and "100%" in bars[-1] and " 5/5 " in bars[-1]


def test_predict_output_does_not_depend_on_the_chunk_size(runs, library, tmp_path):
    single, _ = runs
    tables = []
    for chunk in ("1", "1000"):
        out = tmp_path / f"preds_{chunk}.csv"
        args = ["predict", "--checkpoint", str(single), "--smiles", str(library), "--out"]
        args += [str(out), "--skip-invalid", "--max-atoms", "30", "--chunk-size", chunk]
        with pytest.warns(UserWarning, match=SKIPPED_TWO):
            assert main(args) == 0
        tables.append(pd.read_csv(out, keep_default_na=False))
    # Rows, order, ids and statuses exactly; the values to float32 rounding, since a chunk
    # of one molecule pads its batch differently (the last digit follows the thread count).
    one, many = tables
    assert list(one.columns) == list(many.columns)
    pd.testing.assert_frame_equal(one.drop(columns="logS"), many.drop(columns="logS"))
    assert (one["logS"] == "").tolist() == (many["logS"] == "").tolist()
    ok = one["logS"] != ""
    np.testing.assert_allclose(
        one.loc[ok, "logS"].astype(float), many.loc[ok, "logS"].astype(float), rtol=1e-5
    )


def test_predict_with_workers_writes_the_same_file(runs, library, tmp_path, capsys):
    # --num-workers featurizes in other processes: byte for byte the same output, the
    # same statuses and counted warning, and the same error naming the line without
    # --skip-invalid; a negative count is refused before anything is read.
    single, _ = runs
    args = ["predict", "--checkpoint", str(single / "model.pt"), "--smiles", str(library)]
    args += ["--max-atoms", "30", "--chunk-size", "3"]
    written = []
    for workers in ("0", "2"):
        out = tmp_path / f"preds_{workers}.csv"
        with pytest.warns(UserWarning, match=SKIPPED_TWO):
            assert main([*args, "--out", str(out), "--skip-invalid", "--num-workers", workers]) == 0
        written.append(out.read_bytes())
    assert written[0] == written[1]
    assert "invalid_smiles" in written[1].decode() and "too_many_atoms" in written[1].decode()
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "x.csv"), "--num-workers", "2"]) == 2
    assert f"{library}, line 3" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "x.csv"), "--num-workers", "-1"]) == 2
    assert "num_workers must be a non-negative integer, got -1" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_predict_smiles_workers_match_in_3d_mode(tmp_path):
    # In 3D modes the workers make the conformers too: the same table, statuses included.
    predictor = MoleBlendPredictor(MoleBlend.from_preset("small"), 1, "regression", "2d+3d")
    path = tmp_path / "model3d.pt"
    save_checkpoint(path, predictor_checkpoint(predictor, target_names=["y"]))
    smiles = [s for _, s in LIBRARY] * 2
    serial = pyg_molblend.predict(smiles, path, skip_invalid=True, max_atoms=30)
    parallel = pyg_molblend.predict(smiles, path, skip_invalid=True, max_atoms=30, num_workers=1)
    pd.testing.assert_frame_equal(serial, parallel)
    assert serial["status"].tolist()[:5] == ["ok", "invalid_smiles", "ok", "too_many_atoms", "ok"]


def test_predict_invalid_smiles_names_the_line_without_skip(runs, library, tmp_path, capsys):
    single, _ = runs
    out = tmp_path / "preds.csv"
    args = ["predict", "--checkpoint", str(single / "model.pt"), "--smiles", str(library)]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{library}, line 3" in err and "pass --skip-invalid to predict the others" in err
    assert "skip_invalid" not in err  # the flag, not the library keyword
    assert not out.exists()  # nothing half-written


def test_predict_smi_file_and_python_api(runs, tmp_path):
    single, _ = runs
    smi = tmp_path / "library.smi"
    smi.write_text("CCO ethanol\n\nc1ccccc1O phenol\n")
    out = tmp_path / "preds.csv"
    args = ["predict", "--checkpoint", str(single / "model.pt"), "--smiles", str(smi)]
    assert main([*args, "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["smiles", "name", "logS", "status"]
    api = pyg_molblend.predict(["CCO", "c1ccccc1O"], single / "model.pt")
    assert list(api.columns) == ["smiles", "logS", "status"]
    np.testing.assert_allclose(table["logS"], api["logS"], rtol=1e-5)


def test_predict_renames_a_prediction_that_would_overwrite_an_input_column(runs, tmp_path):
    single, _ = runs
    out = tmp_path / "preds.csv"
    args = ["predict", "--checkpoint", str(single / "model.pt"), "--smiles", ESOL]
    assert main([*args, "--out", str(out)]) == 0
    table = pd.read_csv(out)
    given = pd.read_csv(ESOL)
    assert list(table.columns) == [*given.columns, "logS_pred", "status"]
    pd.testing.assert_series_equal(table["logS"], given["logS"])


def test_ensemble_member_zero_is_the_single_model_and_metrics_are_the_mean(runs):
    single, ensemble = runs
    assert sorted(p.name for p in ensemble.glob("*.pt")) == ["model_0.pt", "model_1.pt"]
    a = load_checkpoint(single / "model.pt")
    b = load_checkpoint(ensemble / "model_0.pt")
    for key in ("encoder_state", "head_state"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), name
    c = load_checkpoint(ensemble / "model_1.pt")
    assert c["predictor"]["seed"] == 1 and b["predictor"]["seed"] == 0
    assert not torch.equal(c["head_state"]["head.1.weight"], b["head_state"]["head.1.weight"])

    metrics = json.loads((ensemble / "metrics.json").read_text())
    assert metrics["ensemble_size"] == 2 and [m["seed"] for m in metrics["members"]] == [0, 1]
    single_metrics = json.loads((single / "metrics.json").read_text())
    assert metrics["members"][0]["test"] == single_metrics["test"]

    rows = pd.read_csv(ensemble / "predictions.csv")
    members = [_reference(ensemble / f"model_{i}.pt", rows["smiles"].tolist()) for i in (0, 1)]
    runs_ = np.stack(members)
    np.testing.assert_allclose(rows["logS_pred"], runs_.mean(0)[:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rows["logS_std"], runs_.std(0)[:, 0], rtol=1e-3, atol=1e-5)
    rmse = float(np.sqrt(np.mean((rows["logS"] - runs_.mean(0)[:, 0]) ** 2)))
    assert metrics["test"] == pytest.approx(rmse, rel=1e-4)


def test_predict_and_evaluate_accept_the_ensemble_folder(runs, library, tmp_path):
    _, ensemble = runs
    out = tmp_path / "preds.csv"
    args = ["predict", "--checkpoint", str(ensemble), "--smiles", str(library), "--out", str(out)]
    with pytest.warns(UserWarning, match=r"1 molecules of .* not predicted \(1 invalid SMILES, 0"):
        assert main([*args, "--skip-invalid", "--uncertainty", "ensemble"]) == 0
    table = pd.read_csv(out)
    ok = [0, 2, 3, 4]
    smiles = [LIBRARY[i][1] for i in ok]
    members = np.stack([_reference(ensemble / f"model_{i}.pt", smiles)[:, 0] for i in (0, 1)])
    np.testing.assert_allclose(table["logS"][ok], members.mean(0), rtol=1e-5)
    np.testing.assert_allclose(table["logS_std"][ok], members.std(0), rtol=1e-4, atol=1e-6)

    ev = tmp_path / "ev"
    args = ["evaluate", "--checkpoint", str(ensemble), "--csv", ESOL, "--targets", "logS"]
    args += ["--task", "regression", "--root", str(tmp_path / "data"), "--out", str(ev)]
    assert main([*args, "--uncertainty", "ensemble"]) == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    finetuned = json.loads((ensemble / "metrics.json").read_text())
    assert metrics["split"] == "finetune" and metrics["ensemble_size"] == 2
    assert metrics["test"] == pytest.approx(finetuned["test"], rel=1e-4)
    assert "logS_std" in pd.read_csv(ev / "predictions.csv").columns


def test_mc_dropout_is_seeded_and_spreads(runs):
    single, _ = runs
    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]
    first = pyg_molblend.predict(smiles, single, uncertainty="dropout", samples=6, seed=3)
    again = pyg_molblend.predict(smiles, single, uncertainty="dropout", samples=6, seed=3)
    other = pyg_molblend.predict(smiles, single, uncertainty="dropout", samples=6, seed=4)
    pd.testing.assert_frame_equal(first, again)
    assert not np.allclose(first["logS_std"], other["logS_std"])
    assert (first["logS_std"] > 0).all()
    plain = pyg_molblend.predict(smiles, single)
    assert "logS_std" not in plain.columns
    # eval-mode prediction is unchanged by the sampling around it
    pd.testing.assert_frame_equal(plain, pyg_molblend.predict(smiles, single))


def test_3d_model_falls_back_per_molecule_and_counts(runs, tmp_path, monkeypatch):
    root = tmp_path
    model = _finetune(root, root / "3d", "--mode", "2d+3d")
    real = AddConformer.embed

    def flaky(self, smiles, num_nodes):
        return None if smiles == "CCO" else real(self, smiles, num_nodes)

    monkeypatch.setattr(AddConformer, "embed", flaky)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = pyg_molblend.predict(["CCO", "c1ccccc1O"], model)
    assert table["status"].tolist() == ["ok_2d_fallback", "ok"]
    assert table["logS"].notna().all()
    assert any("1 molecules had no conformer" in str(w.message) for w in caught)


# Bad input ---------------------------------------------------------------------------


def _predict_error(checkpoint, smiles, tmp_path, capsys, *extra):
    args = ["predict", "--checkpoint", str(checkpoint), "--smiles", str(smiles)]
    assert main([*args, "--out", str(tmp_path / "p.csv"), *extra]) == 2
    return capsys.readouterr().err


def test_predict_refuses_a_pretraining_checkpoint(library, tmp_path, capsys):
    err = _predict_error("pretrained", library, tmp_path, capsys)
    assert "is a pretraining checkpoint" in err and "Fine-tune it first" in err


def test_predict_refuses_another_feature_contract(runs, library, tmp_path, capsys):
    single, _ = runs
    payload = torch.load(single / "model.pt", weights_only=True)
    payload["feature_contract"] = {**payload["feature_contract"], "featurizer": "other"}
    torch.save(payload, tmp_path / "other.pt")
    err = _predict_error(tmp_path / "other.pt", library, tmp_path, capsys)
    assert "trained on features" in err and "other.pt" in err


def test_predict_empty_and_header_only_files(runs, tmp_path, capsys):
    single, _ = runs
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "is empty" in _predict_error(single, empty, tmp_path, capsys)
    header = tmp_path / "header.csv"
    header.write_text("id,smiles\n")
    assert "header but no molecules" in _predict_error(single, header, tmp_path, capsys)
    blank = tmp_path / "blank.smi"
    blank.write_text("\n\n")
    assert "holds no molecules" in _predict_error(single, blank, tmp_path, capsys)


def test_predict_missing_column_and_uncertainty_it_cannot_give(runs, tmp_path, capsys):
    single, _ = runs
    table = tmp_path / "t.csv"
    table.write_text("id,structure\nm1,CCO\n")
    assert "no 'smiles' column" in _predict_error(single, table, tmp_path, capsys)
    good = tmp_path / "g.csv"
    good.write_text("smiles\nCCO\n")
    err = _predict_error(single, good, tmp_path, capsys, "--uncertainty", "ensemble")
    assert "needs an ensemble" in err


def test_ensemble_size_zero_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["finetune", "--ensemble-size", "0", "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2
    assert "--ensemble-size: must be at least 1, got 0" in capsys.readouterr().err


def test_model_set_refuses_members_that_disagree(runs, tmp_path):
    _, ensemble = runs
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "model_0.pt").write_bytes((ensemble / "model_0.pt").read_bytes())
    payload = torch.load(ensemble / "model_1.pt", weights_only=True)
    payload["predictor"]["target_names"] = ["other"]
    torch.save(payload, folder / "model_1.pt")
    with pytest.raises(ValueError, match=r"model_1\.pt"):
        ModelSet(folder)


def test_multiclass_train_predict_evaluate_and_ensemble(tmp_path, capsys):
    # ESOL's logS in three bins (below -4, -4 to -2, above -2) as a multiclass task.
    table = pd.read_csv(ESOL)
    table["solubility"] = np.digitize(table["logS"], [-4.0, -2.0])
    table[["smiles", "solubility"]].to_csv(tmp_path / "classes.csv", index=False)
    classes = str(tmp_path / "classes.csv")
    run = _finetune(
        tmp_path, tmp_path / "run", "--ensemble-size", "2", "--class-weights", "balanced",
        csv=classes, targets="solubility", task="multiclass",
    )  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["task"], metrics["num_classes"], metrics["metric"]) == (
        "multiclass",
        3,
        "cross_entropy",
    )
    assert set(metrics["test_metrics"]) == {"cross_entropy", "accuracy", "roc_auc"}
    written = pd.read_csv(run / "predictions.csv")
    probs = [f"solubility_class_{k}_pred" for k in range(3)]
    assert list(written.columns[4:]) == probs + [f"solubility_class_{k}_std" for k in range(3)]
    assert np.allclose(written[probs].sum(axis=1), 1.0, atol=1e-5)

    out = tmp_path / "preds.csv"
    args = ["predict", "--checkpoint", str(run / "model_0.pt"), "--smiles", classes]
    assert main([*args, "--out", str(out)]) == 0
    predicted = pd.read_csv(out)
    columns = [f"solubility_class_{k}" for k in range(3)]
    assert list(predicted.columns) == ["smiles", "solubility", *columns, "status"]
    expected = _reference(run / "model_0.pt", table["smiles"].str.strip().tolist())
    assert np.allclose(predicted[columns].to_numpy(), expected, atol=1e-5)

    evaluate = ["evaluate", "--checkpoint", str(run), "--csv", classes, "--targets"]
    evaluate += ["solubility", "--task", "multiclass", "--root", str(tmp_path / "data")]
    assert main([*evaluate, "--out", str(tmp_path / "ev")]) == 0
    scored = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert scored["test"] == pytest.approx(metrics["test"], rel=1e-5)
    assert main([*evaluate, "--num-classes", "4", "--out", str(tmp_path / "ev4")]) == 2
    err = capsys.readouterr().err
    assert "predicts 1 multiclass targets (3 classes each)" in err and "(4 classes each)" in err
