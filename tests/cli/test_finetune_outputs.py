"""What ``finetune`` writes besides the model: settings, split.csv, plots (issue 13)."""

import json
from pathlib import Path

import pandas as pd
import pytest

import pyg_molblend.cli.finetune as finetune_cli
from pyg_molblend.cli import main

DATA = Path(__file__).parents[1] / "assets"
BBBP = str(DATA / "tiny_bbbp.csv")
ESOL = str(DATA / "tiny_esol.csv")
FAST = ["--epochs", "1", "--batch-size", "16", "--from-scratch"]


def _finetune(tmp_path, name, *extra, csv=ESOL, targets="logS", task="regression"):
    out = tmp_path / name
    args = ["finetune", "--csv", csv, "--targets", targets, "--task", task]
    args += ["--root", str(tmp_path / "data"), "--out", str(out), *FAST, *extra]
    return main(args), out


def test_settings_split_csv_and_split_file_round_trip(tmp_path):
    code, out = _finetune(tmp_path, "a", "--split", "random", "--split-sizes", "0.6", "0.2", "0.2")
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["num_train"], metrics["num_valid"], metrics["num_test"]) == (48, 16, 16)
    settings = metrics["settings"]
    assert settings["lr"] == 3e-4 and settings["batch_size"] == 16 and settings["epochs"] == 1
    assert settings["preset"] == "small" and settings["mode"] == "2d" and settings["seed"] == 0
    assert settings["split"] == "random" and settings["split_sizes"] == [0.6, 0.2, 0.2]
    assert settings["checkpoint"] is None and settings["csv"] == ESOL

    split = pd.read_csv(out / "split.csv")
    assert split["row"].tolist() == list(range(80))
    assert split["split"].value_counts().to_dict() == {"train": 48, "valid": 16, "test": 16}
    test_rows = pd.read_csv(out / "predictions.csv")["row"]
    assert sorted(test_rows) == split.loc[split["split"] == "test", "row"].tolist()

    code, again = _finetune(tmp_path, "b", "--split-file", str(out / "split.csv"))
    assert code == 0
    assert (again / "split.csv").read_text() == (out / "split.csv").read_text()
    second = json.loads((again / "metrics.json").read_text())
    assert second["test"] == metrics["test"] and second["split"] == "file"


def test_plots_regression_and_classification(tmp_path):
    _, out = _finetune(tmp_path, "reg", "--split", "random")
    for name in ("learning_curve.png", "parity.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _, out = _finetune(
        tmp_path, "cls", "--split", "random", csv=BBBP, targets="p_np", task="classification"
    )
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "parity.png").exists()


def test_no_matplotlib_is_one_note_not_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(finetune_cli, "have_matplotlib", lambda: False)
    code, out = _finetune(tmp_path, "plain", "--split", "random")
    assert code == 0 and not list(out.glob("*.png"))
    assert capsys.readouterr().out.count("matplotlib is not installed") == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("row,split\n0,train\n1,holdout\n", "line 3: split 'holdout' is not train, valid or test"),
        ("row,part\n0,train\n", "needs columns 'row' and 'split'"),
        ("row,split\nx,train\n", "line 2: row 'x' is not a row number"),
    ],
)
def test_bad_split_csv_names_the_line(tmp_path, capsys, content, message):
    path = tmp_path / "split.csv"
    path.write_text(content)
    code, _ = _finetune(tmp_path, "x", "--split-file", str(path))
    assert code == 2 and message in capsys.readouterr().err


def test_bad_split_sizes(tmp_path, capsys):
    code, _ = _finetune(tmp_path, "x", "--split-sizes", "0.5", "0.2", "0.2")
    assert code == 2
    assert "--split-sizes 0.5 0.2 0.2" in capsys.readouterr().err
