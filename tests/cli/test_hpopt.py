"""``pyg-molblend hpopt``: Optuna search on the validation metric (issue 13)."""

import importlib
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from pyg_molblend.cli import main

# The module, not the function pyg_molblend.training re-exports under the same name.
finetune_module = importlib.import_module("pyg_molblend.training.finetune")

optuna = pytest.importorskip("optuna")

DATA = Path(__file__).parents[1] / "assets"
ESOL = str(DATA / "tiny_esol.csv")


def _hpopt(tmp_path, *extra, csv=ESOL):
    args = ["hpopt", "--csv", csv, "--targets", "logS", "--task", "regression"]
    args += ["--root", str(tmp_path / "data"), "--out", str(tmp_path / "search")]
    args += ["--from-scratch", "--max-epochs", "1", "--split", "random", *extra]
    return main(args), tmp_path / "search"


def test_search_never_sees_the_test_split_and_resumes(tmp_path, monkeypatch):
    seen: list[str] = []
    real = finetune_module.dense_batch

    def spy(batch, *args, **kwargs):
        seen.extend(batch.smiles)
        return real(batch, *args, **kwargs)

    monkeypatch.setattr(finetune_module, "dense_batch", spy)
    code, out = _hpopt(tmp_path, "--trials", "2")
    assert code == 0

    table = pd.read_csv(ESOL)
    split = pd.read_csv(out / "split.csv")
    smiles = {
        part: set(table["smiles"].str.strip()[split.loc[split["split"] == part, "row"]])
        for part in ("train", "valid", "test")
    }
    assert len(smiles["test"]) == 8
    assert not smiles["test"] & set(seen)  # no test molecule reached a model
    assert smiles["train"] | smiles["valid"] == set(seen)

    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 2 and (trials["state"] == "COMPLETE").all()
    summary = json.loads((out / "hpopt.json").read_text())
    assert summary["metric"] == "rmse" and summary["direction"] == "minimize"
    assert summary["best_valid"] == trials["value"].min()
    assert "test" not in json.dumps(summary)

    # Run again with more trials: the study in <out>/study.db goes on from the two.
    code, _ = _hpopt(tmp_path, "--trials", "3")
    assert code == 0
    trials = pd.read_csv(out / "trials.csv")
    assert trials["number"].tolist() == [0, 1, 2]


def test_best_config_repeats_the_best_trial_in_finetune(tmp_path, capsys):
    code, out = _hpopt(tmp_path, "--trials", "2", "--patience", "3")
    assert code == 0
    summary = json.loads((out / "hpopt.json").read_text())
    config = json.loads((out / "best_config.json").read_text())
    assert set(config) >= {"lr", "epochs", "dropout", "batch_size", "weight_decay"}
    assert config["from_scratch"] is True and config["patience"] == 3
    assert 1e-5 <= config["lr"] <= 1e-3 and 0.0 <= config["dropout"] <= 0.3
    assert "freeze_encoder" not in config  # no freezing of an untrained encoder

    run = tmp_path / "run"
    args = ["finetune", "--config", str(out / "best_config.json"), "--csv", ESOL]
    args += ["--targets", "logS", "--task", "regression", "--root", str(tmp_path / "data")]
    assert main([*args, "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    # Same split, seed and options: the very validation score the search found.
    assert metrics["valid"] == pytest.approx(summary["best_valid"], rel=1e-6)
    assert metrics["settings"]["lr"] == config["lr"]
    assert metrics["settings"]["dropout"] == config["dropout"]
    assert (run / "split.csv").read_text() == (out / "split.csv").read_text()


def test_too_small_dataset_is_a_clear_error(tmp_path, capsys):
    csv = tmp_path / "three.csv"
    csv.write_text("smiles,logS\nCCO,0.1\nCCN,0.2\nCCC,0.3\n")
    code, _ = _hpopt(tmp_path, "--trials", "1", csv=str(csv))
    err = capsys.readouterr().err
    assert code == 2
    assert "three (3 molecules) is too small for the search's split" in err
    assert "0 valid molecules" in err


def test_without_optuna_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    code, _ = _hpopt(tmp_path, "--trials", "1")
    assert code == 2
    assert "pip install 'pyg_molblend[hpopt]'" in capsys.readouterr().err
