import argparse
import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pyg_molblend.cli import main
from pyg_molblend.training.checkpoint import load_checkpoint

DATA = Path(__file__).parents[1] / "assets"
BBBP = str(DATA / "tiny_bbbp.csv")
ESOL = str(DATA / "tiny_esol.csv")
FAST = ["--epochs", "2", "--batch-size", "16", "--from-scratch"]


def _finetune(tmp_path, *extra, csv=BBBP, targets="p_np", task="classification", name="ft"):
    out = tmp_path / name
    args = [
        "finetune",
        "--csv",
        csv,
        "--targets",
        targets,
        "--task",
        task,
        "--root",
        str(tmp_path / "data"),
        "--out",
        str(out),
        *FAST,
        *extra,
    ]
    return main(args), out


def test_finetune_classification_end_to_end(tmp_path):
    code, out = _finetune(tmp_path, "--split", "random")
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("dataset", "task", "metric", "valid", "test", "epochs", "seconds", "seed", "mode"):
        assert key in metrics
    assert metrics["task"] == "classification" and metrics["metric"] == "roc_auc"
    assert metrics["epochs"] == 2 and metrics["mode"] == "2d" and metrics["seed"] == 0
    assert 0.0 <= metrics["test"] <= 1.0
    assert metrics["num_train"] + metrics["num_valid"] + metrics["num_test"] == 80
    lines = (out / "predictions.csv").read_text().strip().splitlines()
    assert lines[0] == "row,split,smiles,p_np,p_np_pred"
    assert len(lines) == 1 + metrics["num_test"]
    assert (out / "model.pt").exists()

    # evaluate re-creates the same split and reproduces the test metric
    ev = tmp_path / "ev"
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(out / "model.pt"),
            "--csv",
            BBBP,
            "--targets",
            "p_np",
            "--task",
            "classification",
            "--root",
            str(tmp_path / "data"),
            "--out",
            str(ev),
            "--split",
            "random",
        ]
    )
    assert code == 0
    again = json.loads((ev / "metrics.json").read_text())
    assert again["test"] == pytest.approx(metrics["test"], abs=1e-6)
    assert again["valid"] == pytest.approx(metrics["valid"], abs=1e-6)


def test_finetune_regression_random_split_3d(tmp_path):
    code, out = _finetune(
        tmp_path,
        "--split",
        "random",
        "--mode",
        "2d+3d",
        csv=ESOL,
        targets="logS",
        task="regression",
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metric"] == "rmse" and metrics["test"] > 0
    assert set(metrics["test_metrics"]) == {"rmse", "mae", "r2"}
    assert metrics["mode"] == "2d+3d" and metrics["conformer_failures"] == 0


def test_finetune_on_a_new_conformer_each_epoch(tmp_path, monkeypatch, capsys):
    import pyg_molblend.cli.finetune as cli_finetune
    from pyg_molblend.transforms import SampleConformer

    drawn = []

    class Counting(SampleConformer):
        def forward(self, data):
            out = super().forward(data)
            matches = [
                k
                for k in range(data.pos_conformers.size(1))
                if torch.equal(out.pos, data.pos_conformers[:, k])
            ]
            drawn.append(matches[0])
            return out

    monkeypatch.setattr(cli_finetune, "SampleConformer", Counting)
    extra = ("--split", "random", "--mode", "2d+3d", "--num-conformers", "3")
    code, out = _finetune(tmp_path, *extra, csv=ESOL, targets="logS", task="regression")
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["num_conformers"] == 3 and metrics["conformer_failures"] == 0
    # every training molecule drew a conformer in each of the 2 epochs, valid/test none
    assert len(drawn) >= 2 * metrics["num_train"] and set(drawn) == {0, 1, 2}
    # 2D uses no conformer; K must be positive
    code, _ = _finetune(tmp_path, "--num-conformers", "3", name="flat")
    assert code == 2 and "--num-conformers 3 needs a 3D mode" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        _finetune(tmp_path, "--mode", "3d", "--num-conformers", "0", name="zero")
    assert exit_info.value.code == 2 and "must be at least 1, got 0" in capsys.readouterr().err


def test_bad_rows_named_or_skipped_with_count(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    rows = (DATA / "tiny_bbbp.csv").read_text().splitlines()
    rows.insert(4, "C1CC(,1,bad")
    bad.write_text("\n".join(rows) + "\n")
    code, _ = _finetune(tmp_path, csv=str(bad))
    assert code == 2
    err = capsys.readouterr().err
    assert "bad.csv, line 5" in err and "C1CC(" in err  # the editor line (header: line 1)
    with pytest.warns(UserWarning, match="1"):
        code, out = _finetune(tmp_path, "--skip-invalid", csv=str(bad), name="skip")
    assert code == 0
    assert json.loads((out / "metrics.json").read_text())["skipped_invalid"] == 1


def test_missing_column_and_all_missing_targets(tmp_path, capsys):
    code, _ = _finetune(tmp_path, targets="nope")
    assert code == 2 and "'nope'" in capsys.readouterr().err
    empty = tmp_path / "empty.csv"
    empty.write_text("smiles,y\nCCO,\nCCN,\n")
    code, _ = _finetune(tmp_path, csv=str(empty), targets="y")
    assert code == 2 and "'y'" in capsys.readouterr().err


def test_atom_limit(tmp_path, capsys):
    code, _ = _finetune(tmp_path, "--max-atoms", "8")
    assert code == 2 and "above --max-atoms=8" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="above max_atoms=22"):
        code, out = _finetune(
            tmp_path, "--max-atoms", "22", "--skip-invalid", "--split", "random", name="small"
        )
    metrics = json.loads((out / "metrics.json").read_text())
    assert code == 0 and metrics["skipped_too_large"] > 0
    used = metrics["num_train"] + metrics["num_valid"] + metrics["num_test"]
    assert used == 80 - metrics["skipped_too_large"]


def test_conformer_failures_fall_back_and_are_reported(tmp_path, monkeypatch):
    from pyg_molblend.transforms import AddConformer

    real = AddConformer.embed

    def flaky(self, smiles, num_nodes):
        return None if "N" in smiles else real(self, smiles, num_nodes)

    monkeypatch.setattr(AddConformer, "embed", flaky)
    with pytest.warns(UserWarning, match="Conformer embedding failed"):
        code, out = _finetune(tmp_path, "--mode", "3d")
    metrics = json.loads((out / "metrics.json").read_text())
    assert code == 0 and metrics["conformer_failures"] > 0


def test_bad_checkpoints(tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    code = main(
        [
            "finetune",
            "--csv",
            BBBP,
            "--targets",
            "p_np",
            "--task",
            "classification",
            "--root",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "g"),
            "--checkpoint",
            str(garbage),
        ]
    )
    assert code == 2 and "garbage.pt" in capsys.readouterr().err
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(garbage),
            "--csv",
            BBBP,
            "--targets",
            "p_np",
            "--task",
            "classification",
            "--root",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2 and "garbage.pt" in capsys.readouterr().err
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "missing.pt"),
            "--csv",
            BBBP,
            "--targets",
            "p_np",
            "--task",
            "classification",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2 and "not found" in capsys.readouterr().err
    torch.save({"format": "something else"}, garbage)
    code = main(
        ["embed", "--checkpoint", str(garbage), "--smiles", BBBP, "--out", str(tmp_path / "e.npy")]
    )
    assert code == 2 and "not a pyg_molblend checkpoint" in capsys.readouterr().err


def _pretrain_args(out, steps, *extra):
    return [
        "pretrain",
        "--smiles",
        BBBP,
        "--steps",
        str(steps),
        "--batch-size",
        "16",
        "--save-every",
        "2",
        "--warmup-steps",
        "2",
        "--out",
        str(out),
        *extra,
    ]


def test_pretrain_then_embed_and_finetune_from_it(tmp_path):
    out = tmp_path / "pre"
    assert main(_pretrain_args(out, 3)) == 0
    payload = load_checkpoint(out / "checkpoint.pt", kind="pretrain")
    assert payload["step"] == 3 and payload["data"]["molecules"] == 80
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in log) and log[0]["denoise"] is not None
    times = [r["time"] for r in log]  # when each step ended, for rates over a resumed run
    assert times == sorted(times) and abs(times[-1] - time.time()) < 600

    smi = tmp_path / "in.smi"
    smi.write_text("CCO\nc1ccccc1\nnot_a_smiles\nCC(=O)O\n")
    emb = tmp_path / "e.npy"

    def embed(*extra):
        ckpt = str(out / "checkpoint.pt")
        return main(
            ["embed", "--checkpoint", ckpt, "--smiles", str(smi), "--out", str(emb), *extra]
        )

    assert embed() == 2
    skipped = r"Skipped 1 molecules of .*in\.smi with an invalid SMILES .*line 3: .*'not_a_smiles'"
    with pytest.warns(UserWarning, match=skipped):
        assert embed("--skip-invalid") == 0
    first = np.load(emb)
    assert first.shape == (4, 128)
    assert np.isnan(first[2]).all() and np.isfinite(first[[0, 1, 3]]).all()
    with pytest.warns(UserWarning, match=skipped):
        assert embed("--skip-invalid") == 0
    np.testing.assert_array_equal(np.load(emb), first)

    code, _ = _finetune(tmp_path, name="from_pre")
    assert code == 0
    code = main(
        [
            "finetune",
            "--csv",
            BBBP,
            "--targets",
            "p_np",
            "--task",
            "classification",
            "--root",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "ft2"),
            "--epochs",
            "1",
            "--checkpoint",
            str(out / "checkpoint.pt"),
        ]
    )
    assert code == 0
    assert json.loads((tmp_path / "ft2" / "metrics.json").read_text())["checkpoint"].endswith(
        "checkpoint.pt"
    )
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(out / "checkpoint.pt"),
            "--csv",
            BBBP,
            "--targets",
            "p_np",
            "--task",
            "classification",
            "--root",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2


def _run(args, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "pyg_molblend", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


def test_killed_pretraining_resumes_to_identical_weights(tmp_path):
    straight = tmp_path / "straight"
    assert main(_pretrain_args(straight, 6, "--no-conformers")) == 0
    killed = tmp_path / "killed"
    proc = _run(_pretrain_args(killed, 6, "--no-conformers", "--root", str(straight / "data")))
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        ckpt = killed / "checkpoint.pt"
        if ckpt.exists() and load_checkpoint(ckpt)["step"] >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert main(_pretrain_args(killed, 6, "--no-conformers", "--resume")) == 0
    a = load_checkpoint(straight / "checkpoint.pt")
    b = load_checkpoint(killed / "checkpoint.pt")
    assert b["step"] == 6
    for key, value in a["encoder_state"].items():
        torch.testing.assert_close(b["encoder_state"][key], value, rtol=1e-5, atol=1e-6)


def test_killed_finetuning_resumes_to_the_uninterrupted_model(tmp_path, capsys):
    args = ["--csv", BBBP, "--targets", "p_np", "--task", "classification"]
    args += ["--epochs", "6", "--batch-size", "16", "--from-scratch", "--state-interval", "0"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main(["finetune", *args, "--root", str(tmp_path / "a"), "--out", str(straight)]) == 0
    assert not (straight / "training_state.pt").exists()  # removed at the end

    # the killed run prepares its own data; the resumed one reads that cache
    cli = ["finetune", *args, "--root", str(tmp_path / "b"), "--out", str(killed)]
    proc = _run(cli)
    state = killed / "training_state.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and load_checkpoint(state)["epoch"] >= 1:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert 1 <= load_checkpoint(state)["epoch"] < 6
    capsys.readouterr()
    # other settings: refused with exit 2, naming the difference, the state left as it was
    assert main([*cli, "--resume", "--lr", "1e-3"]) == 2
    assert "lr 0.0003 (this run: 0.001)" in capsys.readouterr().err
    assert main([*cli, "--resume"]) == 0
    assert "resuming after epoch" in capsys.readouterr().out
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert (a["valid"], a["test"], a["best_epoch"]) == (b["valid"], b["test"], b["best_epoch"])
    a, b = load_checkpoint(straight / "model.pt"), load_checkpoint(killed / "model.pt")
    for part in ("encoder_state", "head_state"):
        for key, value in a[part].items():
            assert torch.equal(b[part][key], value), key


def test_torchrun_two_processes_gloo(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29531",
        "-m",
        "pyg_molblend",
        *_pretrain_args(out, 2, "--no-conformers"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = load_checkpoint(out / "checkpoint.pt")
    assert payload["world_size"] == 2 and payload["step"] == 2 and len(payload["rng"]) == 2
    assert (out / "log.jsonl").read_text().count("\n") == 2  # rank 0 logs alone


def test_pretrain_on_qm9_sdf_geometries_and_smiles(tmp_path, capsys):
    qm9 = tmp_path / "qm9"
    (qm9 / "raw").mkdir(parents=True)
    shutil.copy(DATA / "qm9_b3lyp_part01_head200.csv.gz", qm9 / "raw" / "qm9_part01.csv.gz")
    out = tmp_path / "pre"
    args = ["--qm9", str(qm9), "--qm9-max-molecules", "48", "--max-molecules", "16"]
    args += ["--sdf", str(DATA / "qm9_mini.sdf")]
    assert main(_pretrain_args(out, 2, *args)) == 0
    payload = load_checkpoint(out / "checkpoint.pt", kind="pretrain")
    assert payload["data"]["sources"] == {"smiles": 16, "sdf": 16, "qm9": 48}
    assert payload["data"]["molecules"] == 80 and payload["step"] == 2
    assert "80 molecules (16 smiles, 16 sdf, 48 qm9; 0 without 3D)" in capsys.readouterr().out
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(r["3d"] is not None and r["denoise"] is not None for r in log)

    # QM9 alone, with its DFT coordinates, not RDKit's
    from pyg_molblend.cli.pretrain import _qm9

    alone = tmp_path / "alone"
    cmd = ["pretrain", "--qm9", str(qm9), "--qm9-max-molecules", "32", "--steps", "1"]
    assert main([*cmd, "--batch-size", "16", "--out", str(alone)]) == 0
    args = argparse.Namespace(qm9=str(qm9), qm9_max_molecules=32, num_workers=0, force_reload=False)
    dataset = _qm9(args)
    assert bool(dataset._data.has_pos.all())
    table = pd.read_csv(qm9 / "raw" / "qm9_part01.csv.gz", nrows=32)
    for i in (5, 31):
        elements, xyz = (ast.literal_eval(table[c][i]) for c in ("Elements", "XYZ_Ang"))
        heavy = [p for e, p in zip(elements, xyz, strict=True) if e != "H"]
        torch.testing.assert_close(dataset[i].pos, torch.tensor(heavy, dtype=torch.float))

    # no molecules, or 2D-only data with 3D molecules, or a root without tables: named errors
    empty = tmp_path / "empty"
    (empty / "raw").mkdir(parents=True)
    assert main(["pretrain", "--out", str(tmp_path / "x")]) == 2
    assert "--smiles FILE" in capsys.readouterr().err
    assert main(["pretrain", "--qm9", str(empty), "--out", str(tmp_path / "x")]) == 2
    assert "neither qm9pack tables" in capsys.readouterr().err
    assert main(_pretrain_args(tmp_path / "y", 1, "--qm9", str(qm9), "--no-conformers")) == 2
    assert "--mode 2d" in capsys.readouterr().err
