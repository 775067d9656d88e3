"""``finetune`` options users ask for (issue 13): ``--config``, freezing, patience, the
selection metric, class weights, head dropout and ``--descriptors``."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import Descriptors

from pyg_molblend.cli import main
from pyg_molblend.training.checkpoint import load_checkpoint, load_encoder, load_predictor

DATA = Path(__file__).parents[1] / "assets"
ESOL = str(DATA / "tiny_esol.csv")
BBBP = str(DATA / "tiny_bbbp.csv")


def _finetune(tmp_path, name, *extra, csv=ESOL, targets="logS", task="regression"):
    out = tmp_path / name
    args = ["finetune", "--csv", csv, "--targets", targets, "--task", task, "--split", "random"]
    args += ["--root", str(tmp_path / "data"), "--out", str(out), "--batch-size", "16", *extra]
    try:
        return main(args), out
    except SystemExit as error:  # argparse's own errors (also exit code 2)
        return error.code, out


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_config_file_values_and_command_line_wins(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"epochs": 3, "lr": 1e-4, "from-scratch": True, "dropout": 0.1}))
    code, out = _finetune(tmp_path, "a", "--config", str(config), "--epochs", "1")
    assert code == 0
    settings = _metrics(out)["settings"]
    assert settings["epochs"] == 1  # the command line wins
    assert settings["lr"] == 1e-4 and settings["dropout"] == 0.1
    assert settings["from_scratch"] is True and settings["checkpoint"] is None
    assert len(_metrics(out)["history"]) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"learning_rate": 0.1}', "'learning_rate' is not an option of this command"),
        ('{"epochs": 0}', "argument --epochs: must be at least 1, got 0"),
        ('{"freeze_encoder": "yes"}', "'freeze_encoder' must be true or false"),
        ("[1, 2]", "must hold an object of option names and values"),
        ("{epochs: 3}", "is not valid JSON"),
    ],
)
def test_bad_config_file_exits_2_naming_the_key(tmp_path, capsys, content, message):
    config = tmp_path / "config.json"
    config.write_text(content)
    code, _ = _finetune(tmp_path, "x", "--config", str(config))
    assert code == 2 and message in capsys.readouterr().err


def test_missing_config_file(tmp_path, capsys):
    code, _ = _finetune(tmp_path, "x", "--config", str(tmp_path / "nope.json"))
    assert code == 2 and "--config not found" in capsys.readouterr().err


def test_freeze_encoder_keeps_the_pretrained_encoder(tmp_path):
    code, out = _finetune(
        tmp_path, "frozen", "--checkpoint", "pretrained", "--freeze-encoder", "--epochs", "1"
    )
    assert code == 0
    trained = load_checkpoint(out / "model.pt")["encoder_state"]
    pretrained = load_encoder("pretrained").state_dict()
    assert trained.keys() == pretrained.keys()
    assert all(torch.equal(trained[k], pretrained[k]) for k in pretrained)

    code, out = _finetune(
        tmp_path, "staged", "--checkpoint", "pretrained", "--unfreeze-after", "1", "--epochs", "2"
    )
    assert code == 0
    trained = load_checkpoint(out / "model.pt")["encoder_state"]
    changed = [k for k in pretrained if not torch.equal(trained[k], pretrained[k])]
    # Epoch 1 trains the head alone; epoch 2 the encoder too. The kept epoch shows which.
    assert bool(changed) == (_metrics(out)["best_epoch"] == 2)


def test_attention_dropout_reaches_every_layer_and_is_stored(tmp_path):
    rates = {}
    for value in ("0", "0.2"):
        code, out = _finetune(
            tmp_path, value, "--checkpoint", "pretrained", "--attn-dropout", value, "--epochs", "1"
        )
        assert code == 0
        predictor, _ = load_predictor(out / "model.pt")
        rates[value] = {layer.attn_dropout for layer in predictor.encoder.layers}
        assert _metrics(out)["settings"]["attn_dropout"] == float(value)
    assert rates == {"0": {0.0}, "0.2": {0.2}}
    assert load_encoder("pretrained").layers[0].attn_dropout == 0.1  # the default's value


def test_patience_stops_early_and_metric_selects(tmp_path):
    code, out = _finetune(
        tmp_path, "p", "--from-scratch", "--epochs", "8", "--patience", "1", "--metric", "mae"
    )
    assert code == 0
    metrics = _metrics(out)
    history = metrics["history"]
    maes = [h["mae"] for h in history]
    assert metrics["metric"] == "mae"
    assert metrics["best_epoch"] == int(np.argmin(maes)) + 1
    assert len(history) == min(8, metrics["best_epoch"] + 1)
    assert metrics["valid"] == pytest.approx(min(maes), rel=1e-5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--metric", "pr_auc"], "pr_auc"),
        (["--class-weights", "balanced"], "class_weights='balanced' weights classification"),
        (["--unfreeze-after", "3", "--epochs", "3"], "unfreeze_after must be an integer"),
        (["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
        (["--attn-dropout", "1"], "argument --attn-dropout: must be in [0, 1), got 1.0"),
        (["--dropout", "-0.1"], "argument --dropout: must be in [0, 1), got -0.1"),
    ],
)
def test_controls_that_do_not_fit_exit_2(tmp_path, capsys, extra, message):
    code, _ = _finetune(tmp_path, "x", "--from-scratch", *extra)
    assert code == 2 and message in capsys.readouterr().err


def test_class_weights_and_head_dropout_are_kept(tmp_path):
    code, out = _finetune(
        tmp_path,
        "cw",
        "--from-scratch",
        "--epochs",
        "1",
        "--class-weights",
        "balanced",
        "--dropout",
        "0.25",
        "--metric",
        "pr_auc",
        csv=BBBP,
        targets="p_np",
        task="classification",
    )
    assert code == 0
    metrics = _metrics(out)
    assert metrics["metric"] == "pr_auc" and metrics["settings"]["class_weights"] == "balanced"
    predictor, meta = load_predictor(out / "model.pt")
    assert meta["dropout"] == 0.25 and predictor.head[0].p == 0.25
    labels = pd.read_csv(BBBP)["p_np"].to_numpy()
    split = pd.read_csv(out / "split.csv")
    train = labels[split.loc[split["split"] == "train", "row"]]
    expected = (train == 0).sum() / (train == 1).sum()
    assert load_checkpoint(out / "model.pt")["head_state"]["pos_weight"].item() == pytest.approx(
        expected, rel=1e-6
    )


def _descriptor_table(path: str) -> pd.DataFrame:
    mols = [Chem.MolFromSmiles(s.strip()) for s in pd.read_csv(path)["smiles"]]
    return pd.DataFrame(
        {
            "mol_wt": [Descriptors.MolWt(m) for m in mols],
            "logp": [Descriptors.MolLogP(m) for m in mols],
        }
    )


def test_descriptors_end_to_end(tmp_path, capsys):
    table = _descriptor_table(ESOL)
    descriptors = tmp_path / "descriptors.csv"
    table.to_csv(descriptors, index=False)
    code, out = _finetune(
        tmp_path, "d", "--from-scratch", "--epochs", "2", "--descriptors", str(descriptors)
    )
    assert code == 0
    predictor, meta = load_predictor(out / "model.pt")
    assert meta["num_descriptors"] == 2 and predictor.num_descriptors == 2
    mean = predictor.descriptor_mean.numpy()
    split = pd.read_csv(out / "split.csv")
    train_rows = split.loc[split["split"] == "train", "row"]
    np.testing.assert_allclose(mean, table.iloc[train_rows].mean().to_numpy(), rtol=1e-5)

    # evaluate with the same descriptors gives fine-tuning's test score; without, exit 2
    data = ["--csv", ESOL, "--targets", "logS", "--task", "regression"]
    data += ["--root", str(tmp_path / "data")]
    code = main(
        [
            "evaluate",
            *data,
            "--checkpoint",
            str(out / "model.pt"),
            "--descriptors",
            str(descriptors),
            "--out",
            str(tmp_path / "ev"),
        ]
    )
    assert code == 0
    assert _metrics(tmp_path / "ev")["test"] == pytest.approx(_metrics(out)["test"], rel=1e-6)
    capsys.readouterr()
    code = main(
        ["evaluate", *data, "--checkpoint", str(out / "model.pt"), "--out", str(tmp_path / "ev2")]
    )
    assert code == 2
    assert "fine-tuned with 2 descriptors per molecule" in capsys.readouterr().err

    # predict: the test molecules with their descriptor rows give finetune's predictions
    test = pd.read_csv(out / "predictions.csv")
    smiles = tmp_path / "new.csv"
    test[["smiles"]].to_csv(smiles, index=False)
    preds = tmp_path / "preds.csv"

    def predict(*extra):
        args = ["predict", "--checkpoint", str(out / "model.pt"), "--smiles", str(smiles)]
        return main([*args, "--out", str(preds), *extra])

    rows = tmp_path / "rows.csv"
    table.iloc[test["row"]].to_csv(rows, index=False)
    assert predict("--descriptors", str(rows)) == 0
    np.testing.assert_allclose(pd.read_csv(preds)["logS"], test["logS_pred"], rtol=1e-5)

    zeros = tmp_path / "zeros.npy"
    np.save(zeros, np.zeros((len(test), 2)))
    assert predict("--descriptors", str(zeros)) == 0
    assert not np.allclose(pd.read_csv(preds)["logS"], test["logS_pred"])

    capsys.readouterr()
    np.save(zeros, np.zeros((len(test) - 1, 2)))
    assert predict("--descriptors", str(zeros)) == 2
    assert f"have {len(test) - 1} rows but" in capsys.readouterr().err
    assert predict() == 2
    assert "give them (--descriptors FILE" in capsys.readouterr().err


def test_bad_descriptor_files_exit_2(tmp_path, capsys):
    table = _descriptor_table(ESOL)
    short = tmp_path / "short.csv"
    table.iloc[:-1].to_csv(short, index=False)
    code, _ = _finetune(tmp_path, "x", "--from-scratch", "--descriptors", str(short))
    assert code == 2
    assert "has 79 rows, but the data file has 80 data rows" in capsys.readouterr().err

    table.loc[5, "logp"] = np.nan
    holes = tmp_path / "holes.csv"
    table.to_csv(holes, index=False)
    code, _ = _finetune(tmp_path, "x", "--from-scratch", "--descriptors", str(holes))
    assert code == 2
    assert "column 1 of data row 5" in capsys.readouterr().err
