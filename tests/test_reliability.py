"""Issue 10's bad inputs and faults, one row each: every row failed on commit 575bbf8.

The table is :data:`ROWS`; each case is a plain function of a :class:`Case` (temporary
folder, captured output, monkeypatch). Ids start with the issue's section number:
1 checkpoints, 2 caches, 3 evaluate's split, 4 non-finite numbers, 5 failing late,
6 smaller silent cases, 8 what a newcomer reads. Section 7 (a suite green on every
machine) is ``tests/test_model.py::test_overfit_spd_accuracy`` itself. Cases that need only a
folder take ``tmp_path``.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import Batch

from pyg_molblend.cli import main
from pyg_molblend.data import from_smiles, to_dense
from pyg_molblend.datasets import QM9, CSVDataset, MoleculeNet, SDFDataset, SmilesDataset, load_ogb
from pyg_molblend.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pyg_molblend.transforms import AddConformer, AddPairwiseDistance, AddShortestPath

DATA = Path(__file__).parent / "assets"
BBBP = str(DATA / "tiny_bbbp.csv")
ESOL = str(DATA / "tiny_esol.csv")
FAST = ["--epochs", "1", "--batch-size", "16"]


@dataclass
class Case:
    tmp: Path
    capsys: pytest.CaptureFixture
    monkeypatch: pytest.MonkeyPatch

    def err(self) -> str:
        return self.capsys.readouterr().err

    def last_err(self) -> str:
        """The last line on stderr (after any progress bars)."""
        return self.err().strip().split("\n")[-1].split("\r")[-1]


def _strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def _finetune(c: Case, *extra, csv=BBBP, targets="p_np", task="classification", name="ft"):
    """Fine-tune from scratch, unless :obj:`extra` names a ``--checkpoint``."""
    out = c.tmp / name
    args = ["finetune", "--csv", csv, "--targets", targets, "--task", task]
    args += ["--root", str(c.tmp / "data"), "--out", str(out), *FAST, *extra]
    if "--checkpoint" not in extra:
        args.append("--from-scratch")
    return main(args), out


def _evaluate(c: Case, model: Path, *extra, csv=BBBP, targets="p_np", name="ev"):
    out = c.tmp / name
    args = ["evaluate", "--checkpoint", str(model), "--csv", csv, "--targets", targets]
    args += ["--task", "classification", "--root", str(c.tmp / "data"), "--out", str(out)]
    return main([*args, *extra]), out


def _pretrain(c: Case, out: Path, *extra, steps=4, smiles=BBBP):
    args = ["pretrain", "--smiles", smiles, "--steps", str(steps), "--batch-size", "16"]
    args += ["--save-every", "2", "--warmup-steps", "2", "--no-conformers", "--out", str(out)]
    return main([*args, *extra])


def _weights_payload(**extra):
    from pyg_molblend.models import MoleBlend

    model = MoleBlend.from_preset("small")
    return {"kind": "pretrain", "encoder_config": model.config, **extra}, model


# 1. Checkpoints ------------------------------------------------------------------------


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def case_checkpoint_pickle_cannot_run_code(c: Case):
    marker = c.tmp / "pwned"
    evil = c.tmp / "evil.pt"
    torch.save({"format": "pyg_molblend", "kind": "pretrain", "x": _RunsCode(marker)}, evil)
    smi = c.tmp / "in.smi"
    smi.write_text("CCO\n")
    code = main(["embed", "--checkpoint", str(evil), "--smiles", str(smi), "--out", str(c.tmp)])
    err = c.err()
    assert code == 2 and "evil.pt" in err and "run code" in err
    assert not marker.exists()
    code, _ = _finetune(c, "--checkpoint", str(evil))
    assert code == 2 and not marker.exists()


def case_checkpoint_corrupt_says_not_readable(c: Case):
    bad = c.tmp / "bad.pt"
    good = c.tmp / "good.pt"
    payload, model = _weights_payload(encoder_state=None)
    payload["encoder_state"] = model.state_dict()
    save_checkpoint(good, payload)
    bad.write_bytes(good.read_bytes()[:200] + b"garbage" + good.read_bytes()[207:])
    for path in (bad, c.tmp / "text.pt"):
        if not path.exists():
            path.write_text("garbage")
        with pytest.raises(CheckpointError, match="not a readable checkpoint"):
            load_checkpoint(path)


# 3. evaluate's split -------------------------------------------------------------------


def case_evaluate_defaults_to_the_finetune_split(c: Case):
    code, out = _finetune(c, "--split", "random", "--seed", "3")
    assert code == 0
    tuned = pd.read_csv(out / "predictions.csv")
    code, ev = _evaluate(c, out / "model.pt")
    assert code == 0
    scored = pd.read_csv(ev / "predictions.csv")
    assert scored["smiles"].tolist() == tuned["smiles"].tolist()
    np.testing.assert_allclose(scored["p_np_pred"], tuned["p_np_pred"], rtol=1e-5)
    metrics = _strict_json((ev / "metrics.json").read_text())
    assert metrics["split"] == "finetune" and metrics["num_test"] == len(tuned)
    code, ev_all = _evaluate(c, out / "model.pt", "--split", "all", name="all")
    assert code == 0 and len(pd.read_csv(ev_all / "predictions.csv")) == 80


# 4. Non-finite numbers -----------------------------------------------------------------


def case_finetune_divergence_stops_with_exit_2(c: Case):
    code, out = _finetune(c, "--lr", "1e30", "--epochs", "2")
    err = c.err()
    assert code == 2 and "diverged" in err and "--lr" in err
    assert not (out / "model.pt").exists() and not (out / "metrics.json").exists()


def case_pretrain_divergence_keeps_last_good_checkpoint(c: Case):
    from pyg_molblend.models import MoleBlend

    real = MoleBlend.pretrain_loss
    calls = []

    def diverges_at_step_3(self, *args, **kwargs):
        calls.append(1)
        out = real(self, *args, **kwargs)
        if len(calls) >= 3:
            out.loss = out.loss * math.nan
        return out

    c.monkeypatch.setattr(MoleBlend, "pretrain_loss", diverges_at_step_3)
    out = c.tmp / "pre"
    code = _pretrain(c, out, steps=4)
    err = c.last_err()
    assert code == 2 and "diverged at step 3" in err and "--lr" in err
    kept = load_checkpoint(out / "checkpoint.pt")  # load refuses non-finite weights
    assert kept["step"] == 2
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def case_nan_weight_checkpoint_refused(c: Case):
    payload, model = _weights_payload()
    state = model.state_dict()
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = torch.full_like(state[first], math.nan)
    path = c.tmp / "nan.pt"
    with pytest.raises(CheckpointError, match="NaN"):
        save_checkpoint(path, {**payload, "encoder_state": state})
    assert not path.exists()
    # as a diverged run of an earlier version wrote it
    torch.save(
        {"format": "pyg_molblend", **_feature_header(), **payload, "encoder_state": state}, path
    )
    code, _ = _finetune(c, "--checkpoint", str(path))
    err = c.err()
    assert code == 2 and "NaN" in err and "nan.pt" in err


def _feature_header():
    from pyg_molblend import __version__
    from pyg_molblend.training.checkpoint import FEATURE_CONTRACT

    return {"version": __version__, "feature_contract": FEATURE_CONTRACT}


def case_metrics_and_log_are_strict_json(c: Case):
    rows = pd.read_csv(BBBP)
    rows.loc[60:69, "p_np"] = 1  # a validation set of one class: ROC-AUC undefined
    path = c.tmp / "one_class_valid.csv"
    rows.to_csv(path, index=False)
    split = c.tmp / "split.json"
    split.write_text(
        json.dumps(
            {"train": list(range(60)), "valid": list(range(60, 70)), "test": list(range(70, 80))}
        )
    )
    with pytest.warns(UserWarning, match="undefined"):
        code, out = _finetune(c, "--split-file", str(split), csv=str(path))
    assert code == 0
    metrics = _strict_json((out / "metrics.json").read_text())
    assert metrics["valid"] is None and metrics["history"][0]["roc_auc"] is None
    assert 0.0 <= metrics["test"] <= 1.0
    from pyg_molblend.training.io import append_jsonl, read_jsonl

    log = c.tmp / "log.jsonl"
    append_jsonl(log, {"step": 1, "loss": math.nan, "x": math.inf})
    assert _strict_json(log.read_text()) == {"step": 1, "loss": None, "x": None}
    assert read_jsonl(log) == [{"step": 1, "loss": None, "x": None}]


# 5. Failing late, or with a traceback --------------------------------------------------


def _blocked_out(c: Case, module, name: str) -> Path:
    """A path under a regular file (so it cannot be created), with :obj:`module.name`
    replaced by a function that fails the test if the work starts anyway."""

    def never(*args, **kwargs):
        raise AssertionError(f"{name} ran although --out cannot be written")

    c.monkeypatch.setattr(module, name, never)
    blocker = c.tmp / "file"
    blocker.write_text("")
    return blocker


def case_unwritable_out_fails_before_training(c: Case):
    import pyg_molblend.cli.finetune as cli_finetune

    blocker = _blocked_out(c, cli_finetune, "finetune")
    args = ["--csv", BBBP, "--targets", "p_np", "--task", "classification"]
    code = main(["finetune", *args, "--out", str(blocker / "out"), *FAST])
    err = c.err()
    assert code == 2 and "Cannot write to --out" in err and "file" in err


def case_embed_checks_output_before_work(c: Case):
    import pyg_molblend.cli.embed as embed

    blocker = _blocked_out(c, embed, "embed_file")
    code = main(
        ["embed", "--checkpoint", "pretrained", "--smiles", BBBP, "--out", str(blocker / "e")]
    )
    assert code == 2 and "Cannot write to --out" in c.err()


def case_missing_csv_is_exit_2(c: Case):
    code, _ = _finetune(c, csv=str(c.tmp / "nope.csv"))
    err = c.err()
    assert code == 2 and "nope.csv" in err and "Traceback" not in err


def case_resume_with_another_preset_or_batch_size_or_data(c: Case):
    out = c.tmp / "pre"
    assert _pretrain(c, out, steps=2) == 0
    c.err()
    assert _pretrain(c, out, "--resume", "--preset", "base", steps=2) == 2
    assert "channels" in c.err()
    assert _pretrain(c, out, "--resume", "--batch-size", "8", steps=2) == 2
    assert "--batch-size 16 (this run: 8)" in c.err()
    assert _pretrain(c, out, "--resume", steps=2, smiles=ESOL) == 2
    assert "input molecules" in c.err()


def case_disk_full_while_saving_is_clean(c: Case):
    payload, model = _weights_payload()
    path = c.tmp / "ck.pt"
    save_checkpoint(path, {**payload, "encoder_state": model.state_dict(), "step": 1})

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    c.monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError, match="disk full"):
        save_checkpoint(path, {**payload, "encoder_state": model.state_dict(), "step": 2})
    c.monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in c.tmp.iterdir()] == ["ck.pt"]


def case_empty_csv_names_the_file(c: Case):
    for text in ("", "smiles,p_np\n"):
        empty = c.tmp / "empty.csv"
        empty.write_text(text)
        code, _ = _finetune(c, csv=str(empty))
        err = c.last_err()
        assert code == 2 and "empty.csv" in err and "Traceback" not in err


def case_force_reload_rebuilds_the_cache(c: Case):
    def processed():
        files = sorted((c.tmp / "data").rglob("processed/*.pt"))
        assert files
        return {f: f.stat().st_mtime_ns for f in files}

    import pyg_molblend.cli.finetune as cli_finetune

    c.monkeypatch.setattr(cli_finetune, "finetune", _no_training)
    args = ["finetune", "--csv", BBBP, "--targets", "p_np", "--task", "classification"]
    args += ["--root", str(c.tmp / "data"), "--out", str(c.tmp / "a"), "--from-scratch"]
    assert main(args) == 2  # stopped after loading the data
    first = processed()
    assert main(args) == 2 and processed() == first
    assert main([*args, "--force-reload"]) == 2
    again = processed()
    assert again.keys() == first.keys() and all(again[f] > first[f] for f in first)


def _no_training(*args, **kwargs):
    raise ValueError("stopped after loading the data")


def case_bad_split_file_names_the_file(c: Case):
    bad = c.tmp / "split.json"
    bad.write_text("{not json")
    code, _ = _finetune(c, "--split-file", str(bad))
    err = c.err()
    assert code == 2 and "split.json" in err and "JSON" in err


def case_resume_says_where_it_resumes(c: Case):
    out = c.tmp / "pre"
    assert _pretrain(c, out, "--resume", steps=2) == 0
    assert "no checkpoint" in c.capsys.readouterr().out
    assert _pretrain(c, out, "--resume", steps=2) == 0
    assert "resuming from step 2 of 2" in c.capsys.readouterr().out


def case_resume_cuts_the_log_back_to_the_checkpoint(c: Case):
    from pyg_molblend.training.utils import FiniteGuard

    real = FiniteGuard.check

    def killed_at_step_4(self, loss, grad_norm, step, lr, kept):
        if step == 4:
            raise KeyboardInterrupt  # the process dies after logging step 3
        return real(self, loss, grad_norm, step, lr, kept)

    out = c.tmp / "pre"
    c.monkeypatch.setattr(FiniteGuard, "check", killed_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        _pretrain(c, out, steps=5)
    c.monkeypatch.undo()
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2
    assert _pretrain(c, out, "--resume", steps=5) == 0
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]


def case_embed_prints_the_file_it_writes(c: Case):
    smi = c.tmp / "in.smi"
    smi.write_text("CCO\nc1ccccc1\n")
    target = c.tmp / "emb"
    assert (
        main(["embed", "--checkpoint", "pretrained", "--smiles", str(smi), "--out", str(target)])
        == 0
    )
    assert f"{target}.npy" in c.capsys.readouterr().out
    assert np.load(f"{target}.npy").shape[0] == 2


# 6. Smaller silent cases ---------------------------------------------------------------


def case_split_file_holds_csv_rows_under_skip_invalid(c: Case):
    rows = pd.read_csv(BBBP)
    bad = pd.concat([pd.DataFrame({"smiles": ["C1CC("], "p_np": [1], "mol_id": ["x"]}), rows])
    path = c.tmp / "with_bad_first.csv"
    bad.to_csv(path, index=False)
    split = {"train": list(range(1, 61)), "valid": list(range(61, 71)), "test": [0, 71, 75, 80]}
    split_file = c.tmp / "split.json"
    split_file.write_text(json.dumps(split))
    with pytest.warns(UserWarning):
        code, out = _finetune(c, "--skip-invalid", "--split-file", str(split_file), csv=str(path))
    assert code == 0
    tested = pd.read_csv(out / "predictions.csv")["smiles"].tolist()
    assert tested == [bad["smiles"].iloc[r] for r in (71, 75, 80)]


def case_atom_limit_in_pretrain_and_embed(c: Case):
    smi = c.tmp / "in.smi"
    smi.write_text("CCO\n" + "C" * 40 + "\nc1ccccc1\n")
    out = c.tmp / "e.npy"
    args = ["embed", "--checkpoint", "pretrained", "--smiles", str(smi), "--out", str(out)]
    assert main([*args, "--max-atoms", "30"]) == 2
    assert "40" in c.err()
    with pytest.warns(UserWarning, match="1"):
        assert main([*args, "--max-atoms", "30", "--skip-invalid"]) == 0
    emb = np.load(out)
    assert np.isnan(emb[1]).all() and np.isfinite(emb[[0, 2]]).all()
    assert _pretrain(c, c.tmp / "pre", "--max-atoms", "20", steps=1) == 2
    assert "--max-atoms" in c.err()


def case_atomic_outputs_and_model_before_metrics(c: Case):
    import pyg_molblend.cli.common as common
    import pyg_molblend.cli.finetune as cli_finetune

    code, out = _finetune(c, "--split", "random")
    assert code == 0
    before = (out / "predictions.csv").read_bytes()
    real_writer = common.csv.writer

    class Dies:
        def __init__(self, f):
            self.inner, self.rows = real_writer(f), 0

        def writerow(self, row):
            self.rows += 1
            if self.rows == 3:
                raise OSError(28, "No space left on device")
            self.inner.writerow(row)

    c.monkeypatch.setattr(common.csv, "writer", Dies)
    code, _ = _finetune(c, "--split", "random", "--seed", "1")
    assert code == 2 and "No space left" in c.err()
    assert (out / "predictions.csv").read_bytes() == before
    c.monkeypatch.undo()

    def no_model(*args, **kwargs):
        raise CheckpointError("cannot write model.pt")

    c.monkeypatch.setattr(cli_finetune, "save_checkpoint", no_model)
    code, fresh = _finetune(c, "--split", "random", name="fresh")
    assert code == 2 and not (fresh / "metrics.json").exists()


# 8. What a newcomer reads --------------------------------------------------------------


def case_one_exit_convention(c: Case):
    code, _ = _finetune(c, "--max-atoms", "8")
    err = c.last_err()
    assert code == 2 and err.startswith("pyg-molblend finetune: error:") and "--max-atoms" in err
    code = main(["finetune", "--csv", BBBP, "--out", str(c.tmp / "x"), *FAST])
    err = c.last_err()
    assert code == 2 and err.startswith("pyg-molblend finetune: error:") and "--targets" in err


def case_cli_messages_name_flags(c: Case):
    bad = c.tmp / "bad.csv"
    lines = Path(BBBP).read_text().splitlines()
    lines.insert(4, "C1CC(,1,bad")
    bad.write_text("\n".join(lines) + "\n")
    code, _ = _finetune(c, csv=str(bad))
    err = c.err()
    assert code == 2 and "--skip-invalid" in err and "skip_invalid" not in err
    assert "bad.csv" in err and "line 5" in err and "raw" not in err


def case_pretrain_refuses_to_overwrite(c: Case):
    out = c.tmp / "pre"
    assert _pretrain(c, out, steps=2) == 0
    first = load_checkpoint(out / "checkpoint.pt")["encoder_state"]
    assert _pretrain(c, out, "--seed", "1", steps=2) == 2
    assert "--overwrite" in c.err()
    same = load_checkpoint(out / "checkpoint.pt")["encoder_state"]
    assert all(torch.equal(first[k], same[k]) for k in first)
    assert _pretrain(c, out, "--overwrite", "--seed", "1", steps=2) == 0
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


# 2, 4, 6, 8. The data layer ------------------------------------------------------


def _csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _quiet(factory, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return factory(*args, **kwargs)


# ------------------------------------------------------------------------------- 2 cache


def case_csv_edited_in_place(tmp_path):
    path = _csv(tmp_path / "train.csv", "smiles,y\nCCO,1.0\nCCN,2.0\n")
    first = CSVDataset(str(tmp_path / "root"), path, "smiles", ["y"], "regression")
    assert first.smiles == ["CCO", "CCN"]
    _csv(path, "smiles,y\nCCO,1.0\nCCC,5.0\n")  # same size
    edited = CSVDataset(str(tmp_path / "root"), path, "smiles", ["y"], "regression")
    assert edited.smiles == ["CCO", "CCC"] and edited[1].y.item() == 5.0


def case_csv_same_name_other_folder(tmp_path):
    a = _csv(tmp_path / "a" / "train.csv", "smiles,y\nCCO,1.0\nCCN,2.0\n")
    b = _csv(tmp_path / "b" / "train.csv", "smiles,y\nc1ccccc1,3.0\nCCCl,4.0\n")
    root = str(tmp_path / "root")
    assert CSVDataset(root, a, "smiles", ["y"], "regression").smiles == ["CCO", "CCN"]
    assert CSVDataset(root, b, "smiles", ["y"], "regression").smiles == ["c1ccccc1", "CCCl"]


def case_moleculenet_raw_file_edited(tmp_path):
    raw = tmp_path / "freesolv" / "raw" / "SAMPL.csv"
    _csv(raw, "iupac,smiles,expt,calc\nethanol,CCO,-5.0,-4.0\nethylamine,CCN,-4.5,-4.0\n")
    assert MoleculeNet(str(tmp_path), "freesolv").smiles == ["CCO", "CCN"]
    _csv(raw, "iupac,smiles,expt,calc\nethanol,CCO,-5.0,-4.0\npropane,CCC,2.0,2.0\n")
    assert MoleculeNet(str(tmp_path), "freesolv").smiles == ["CCO", "CCC"]


def case_smiles_same_size_and_mtime(tmp_path):
    path = _csv(tmp_path / "mols.smi", "CCO\nCCN\n")
    stat = os.stat(path)
    assert SmilesDataset(str(tmp_path / "root"), [path]).smiles == ["CCO", "CCN"]
    _csv(path, "CCO\nCCC\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # a copy that kept the time
    assert SmilesDataset(str(tmp_path / "root"), [path]).smiles == ["CCO", "CCC"]


def case_qm9_pre_transform_changes_cache(tmp_path):
    (tmp_path / "raw").mkdir()
    shutil.copy(DATA / "qm9_b3lyp_part01_head200.csv.gz", tmp_path / "raw")
    plain = QM9(str(tmp_path), "qm9pack", max_molecules=3)
    assert "spd" not in plain[0]
    paired = QM9(str(tmp_path), "qm9pack", pre_transform=AddShortestPath(), max_molecules=3)
    assert "spd" in paired[0]


def case_pre_filter_changes_cache(tmp_path):
    path = _csv(tmp_path / "t.csv", "smiles,y\nCCO,1\nc1ccccc1,2\nCCN,3\nCCCCCC,4\n")
    root = str(tmp_path / "root")

    def small(data):
        return data.num_nodes < 4

    def large(data):
        return data.num_nodes >= 4

    kept = CSVDataset(root, path, "smiles", ["y"], "regression", pre_filter=small)
    assert kept.smiles == ["CCO", "CCN"]
    other = CSVDataset(root, path, "smiles", ["y"], "regression", pre_filter=large)
    assert other.smiles == ["c1ccccc1", "CCCCCC"]


def case_ogb_pre_transform_changes_cache(tmp_path):
    import pandas as pd
    from ogb.utils import smiles2graph

    directory = tmp_path / "ogbg_molhiv"
    raw = directory / "raw"
    raw.mkdir(parents=True)
    graphs = [smiles2graph(s) for s in ("CCO", "c1ccccc1", "CCN")]

    def write(name, rows):
        pd.DataFrame(rows).to_csv(raw / name, header=False, index=False, compression="gzip")

    write("edge.csv.gz", [e for g in graphs for e in g["edge_index"][:, ::2].T.tolist()])
    write("node-feat.csv.gz", [f for g in graphs for f in g["node_feat"].tolist()])
    write("edge-feat.csv.gz", [f for g in graphs for f in g["edge_feat"][::2].tolist()])
    write("num-node-list.csv.gz", [g["num_nodes"] for g in graphs])
    write("num-edge-list.csv.gz", [g["edge_index"].shape[1] // 2 for g in graphs])
    write("graph-label.csv.gz", [0, 1, 0])
    (directory / "RELEASE_v1.txt").write_text("test copy\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = load_ogb("ogbg-molhiv", str(tmp_path))
        assert "spd" not in plain[0]
        paired = load_ogb("ogbg-molhiv", str(tmp_path), pre_transform=AddShortestPath())
        assert "spd" in paired[0]
        again = load_ogb("ogbg-molhiv", str(tmp_path), force_reload=True)
    assert "spd" not in again[0]
    assert again[0].featurizer == "ogb"  # the vocabulary tag to_dense checks


# Every output-changing option of every transform, with two values that differ.
TRANSFORM_OPTIONS = [
    (AddConformer, "seed", 0, 1),
    (AddConformer, "optimize", False, True),
    (AddConformer, "max_iters", 200, 50),
    (AddConformer, "on_failure", "flag", "raise"),
    (AddConformer, "timeout", 10, 3),
    (AddConformer, "overwrite", False, True),
    (AddConformer, "num_conformers", 1, 11),
    (AddShortestPath, "max_distance", 254, 10),
    (AddShortestPath, "max_hops", 5, 2),
]


def case_transform_repr_complete(tmp_path):
    for cls, option, a, b in TRANSFORM_OPTIONS:
        assert repr(cls(**{option: a})) != repr(cls(**{option: b})), (cls.__name__, option)
    options = {(cls, option) for cls, option, _, _ in TRANSFORM_OPTIONS}
    for cls in (AddConformer, AddShortestPath, AddPairwiseDistance):  # the table is complete
        parameters = inspect.signature(cls.__init__).parameters.values()
        names = {p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD} - {"self"}
        assert names == {option for c, option in options if c is cls}, cls.__name__


# --------------------------------------------------------------------------- 4 non-finite


def case_non_finite_targets_rejected(tmp_path):
    for value in ("inf", "-inf", "nan", "NaN", "1e40"):
        path = _csv(tmp_path / f"t_{value}.csv", f"smiles,pIC50\nCCO,1.0\nCCN,{value}\n")
        with pytest.raises(ValueError) as info:
            CSVDataset(str(tmp_path / "root"), path, "smiles", ["pIC50"], "regression")
        message = str(info.value)
        assert str(path) in message and "line 3" in message and "'pIC50'" in message, message
        assert repr(value) in message, message
    # An empty field still means a missing label (multitask classification).
    path = _csv(tmp_path / "tasks.csv", "smiles,a,b\nCCO,1,\nCCN,,0\n")
    dataset = CSVDataset(str(tmp_path / "root"), path, "smiles", ["a", "b"], "classification")
    y = torch.cat([d.y for d in dataset])
    assert y[0, 0] == 1 and torch.isnan(y[0, 1]) and torch.isnan(y[1, 0]) and y[1, 1] == 0


# -------------------------------------------------------------------- 6 smaller silent cases


def case_conformer_timeout_enforced(tmp_path):
    transform = AddConformer(seed=0, timeout=1)
    start = time.monotonic()
    with pytest.warns(UserWarning, match="timeout=1"):
        data = transform(from_smiles("C" * 300))  # minutes without a hard limit
    assert data.has_pos.tolist() == [False] and torch.isnan(data.pos).all()
    assert time.monotonic() - start < 30  # very loose: the limit is 1 s
    assert bool(AddConformer(seed=0, timeout=1)(from_smiles("CCO")).has_pos)  # still usable


def case_max_atoms_before_pre_transform(tmp_path):
    from pyg_molblend.constants import DEFAULT_MAX_ATOMS

    assert DEFAULT_MAX_ATOMS == 256
    path = _csv(tmp_path / "big.csv", "smiles,y\nCCO,1\n" + "C" * 20 + ",2\nCCN,3\n")
    root = str(tmp_path / "root")
    with pytest.raises(ValueError) as info:
        CSVDataset(root, path, "smiles", ["y"], "regression", max_atoms=10)
    message = str(info.value)
    assert "line 3" in message and "C" * 20 in message and "skip_invalid=True" in message
    with pytest.warns(UserWarning, match="Skipped 1 molecules .*max_atoms=10"):
        dataset = CSVDataset(
            root,
            path,
            "smiles",
            ["y"],
            "regression",
            pre_transform=AddShortestPath(),
            skip_invalid=True,
            max_atoms=10,
        )
    assert dataset.smiles == ["CCO", "CCN"] and dataset.too_large == [(1, "C" * 20)]
    smi = _csv(tmp_path / "big.smi", "CCO\n" + "C" * 20 + "\n")
    with pytest.raises(ValueError, match=r"big\.smi, line 2: .*max_atoms=10"):
        SmilesDataset(str(tmp_path / "s"), [smi], max_atoms=10)
    with pytest.raises(ValueError, match="max_atoms=3"):
        SDFDataset(str(tmp_path / "sdf"), [str(DATA / "qm9_mini.sdf")], max_atoms=3)


def case_smiles_whitespace_rejected(tmp_path):
    for smiles in ("C C", "CC O", "C\tC"):
        with pytest.raises(ValueError, match="whitespace"):
            from_smiles(smiles)


def case_valence_error_named(tmp_path):
    with pytest.raises(ValueError, match=r"valence.*'CN\(C\)\(C\)\(C\)C'"):
        from_smiles("CN(C)(C)(C)C")


def case_duplicate_smiles_conflicting_labels(tmp_path):
    path = _csv(tmp_path / "dup.csv", "smiles,y\nCCO,1\nCCN,0\nCCO,0\nCCN,0\n")
    with pytest.warns(UserWarning, match=r"1 rows .* different labels .*'CCO' on line 2"):
        dataset = CSVDataset(str(tmp_path / "root"), path, "smiles", ["y"], "classification")
    assert len(dataset) == 4  # kept, not silently dropped


def case_source_row_survives_skips(tmp_path):
    text = "smiles,y\nCCO,1\nC1CC(,2\n\nCCN,\nc1ccccc1,4\n"  # invalid, blank, unlabeled
    path = _csv(tmp_path / "rows.csv", text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = CSVDataset(
            str(tmp_path / "r"), path, "smiles", ["y"], "regression", skip_invalid=True
        )
    assert dataset.smiles == ["CCO", "c1ccccc1"]
    assert [int(d.source_row) for d in dataset] == [0, 3] == dataset.source_rows
    assert dataset[1:].source_rows == [3] and dataset.skipped == [(1, "C1CC(")]
    assert Batch.from_data_list(list(dataset)).source_row.tolist() == [0, 3]


def case_foreign_graphs_rejected(tmp_path):
    from torch_geometric.utils import from_smiles as pyg_from_smiles

    from pyg_molblend.constants import FEATURIZER

    with pytest.raises(ValueError, match=r"pyg_molblend\.data\.from_smiles"):
        to_dense(Batch.from_data_list([pyg_from_smiles("CCO")]))
    ours = Batch.from_data_list([from_smiles("CCO"), from_smiles("CCN")])
    assert to_dense(ours).x.shape == (2, 3, 9)
    assert to_dense(ours.index_select([1])[0]).x.shape == (1, 3, 9)
    path = _csv(tmp_path / "t.csv", "smiles,y\nCCO,1\nCCN,2\n")
    dataset = CSVDataset(str(tmp_path / "root"), path, "smiles", ["y"], "regression")
    cached = CSVDataset(str(tmp_path / "root"), path, "smiles", ["y"], "regression")
    assert to_dense(Batch.from_data_list(list(cached[[1, 0]]))).x.shape == (2, 3, 9)
    assert dataset[0].featurizer == FEATURIZER


# ------------------------------------------------------------------------------ 8 newcomer


def case_errors_name_user_file_and_line(tmp_path):
    path = _csv(tmp_path / "mine" / "assay.csv", "smiles,y\nCCO,1\n\nnot_a_smiles,2\n")
    with pytest.raises(ValueError) as info:
        CSVDataset(str(tmp_path / "root"), path, "smiles", ["y"], "regression")
    assert f"{path}, line 4" in str(info.value) and "raw" not in str(info.value)
    with pytest.warns(UserWarning) as record:
        CSVDataset(str(tmp_path / "root"), path, "smiles", ["y"], "regression", skip_invalid=True)
    (warning,) = [w for w in record if "Skipped" in str(w.message)]
    assert f"{path}, line 4" in str(warning.message)
    assert warning.filename == __file__  # attributed to the caller, not to PyG's internals


def case_pyg_argument_order(tmp_path):
    expected = ["transform", "pre_transform", "pre_filter", "force_reload"]
    for cls, leading in (
        (MoleculeNet, ["root", "name"]),
        (CSVDataset, ["root", "csv_path", "smiles_column", "target_columns", "task_type"]),
        (SmilesDataset, ["root", "paths"]),
        (SDFDataset, ["root", "paths"]),
        (QM9, ["root", "source"]),
    ):
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
        positional = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert positional == [*leading, *expected], cls.__name__
    assert "force_reload" in inspect.signature(load_ogb).parameters
    raw = tmp_path / "freesolv" / "raw" / "SAMPL.csv"
    _csv(raw, "iupac,smiles,expt,calc\nethanol,CCO,-5.0,-4.0\n")
    dataset = MoleculeNet(str(tmp_path), "freesolv", None, None, None, True)  # force_reload
    assert dataset.force_reload and not dataset.skip_invalid


def case_shipped_bbbp_offline(tmp_path):
    dataset = _quiet(MoleculeNet, str(tmp_path), "bbbp", skip_invalid=True)
    assert len(dataset) == 2039 and dataset.target_names == ["p_np"]


ROWS = sorted(
    [
        pytest.param(case_checkpoint_pickle_cannot_run_code, id="1-checkpoint-pickle-runs-code"),
        pytest.param(case_checkpoint_corrupt_says_not_readable, id="8-corrupt-checkpoint-message"),
        pytest.param(case_evaluate_defaults_to_the_finetune_split, id="3-evaluate-default-split"),
        pytest.param(case_finetune_divergence_stops_with_exit_2, id="4-finetune-lr-1e30"),
        pytest.param(case_pretrain_divergence_keeps_last_good_checkpoint, id="4-pretrain-lr-1e30"),
        pytest.param(case_nan_weight_checkpoint_refused, id="4-nan-weight-checkpoint"),
        pytest.param(case_metrics_and_log_are_strict_json, id="4-json-null-not-nan"),
        pytest.param(case_unwritable_out_fails_before_training, id="5-unwritable-out"),
        pytest.param(case_embed_checks_output_before_work, id="5-embed-out-checked-first"),
        pytest.param(case_missing_csv_is_exit_2, id="5-missing-csv"),
        pytest.param(case_resume_with_another_preset_or_batch_size_or_data, id="5-resume-mismatch"),
        pytest.param(case_disk_full_while_saving_is_clean, id="5-disk-full"),
        pytest.param(case_bad_split_file_names_the_file, id="5-bad-split-file-json"),
        pytest.param(case_empty_csv_names_the_file, id="5-empty-csv"),
        pytest.param(case_force_reload_rebuilds_the_cache, id="2-cli-force-reload"),
        pytest.param(case_resume_says_where_it_resumes, id="5-resume-says-where"),
        pytest.param(case_resume_cuts_the_log_back_to_the_checkpoint, id="5-resume-log-cut"),
        pytest.param(case_embed_prints_the_file_it_writes, id="5-embed-out-npy"),
        pytest.param(case_split_file_holds_csv_rows_under_skip_invalid, id="6-split-file-csv-rows"),
        pytest.param(case_atom_limit_in_pretrain_and_embed, id="6-max-atoms-everywhere"),
        pytest.param(case_atomic_outputs_and_model_before_metrics, id="6-atomic-writes"),
        pytest.param(case_one_exit_convention, id="8-exit-2-convention"),
        pytest.param(case_cli_messages_name_flags, id="8-cli-flags-and-user-lines"),
        pytest.param(case_pretrain_refuses_to_overwrite, id="8-pretrain-overwrite"),
        pytest.param(case_csv_edited_in_place, id="2-stale-csv-edited-in-place"),
        pytest.param(case_csv_same_name_other_folder, id="2-stale-csv-same-name-other-folder"),
        pytest.param(case_moleculenet_raw_file_edited, id="2-stale-moleculenet-raw-file-edited"),
        pytest.param(case_smiles_same_size_and_mtime, id="2-stale-smiles-same-size-and-mtime"),
        pytest.param(case_qm9_pre_transform_changes_cache, id="2-stale-qm9-pre-transform"),
        pytest.param(case_pre_filter_changes_cache, id="2-stale-pre-filter"),
        pytest.param(case_ogb_pre_transform_changes_cache, id="2-stale-ogb-pre-transform"),
        pytest.param(case_transform_repr_complete, id="2-transform-repr-complete"),
        pytest.param(case_non_finite_targets_rejected, id="4-non-finite-target-rejected"),
        pytest.param(case_conformer_timeout_enforced, id="6-conformer-timeout-enforced"),
        pytest.param(case_max_atoms_before_pre_transform, id="6-max-atoms-before-pre-transform"),
        pytest.param(case_smiles_whitespace_rejected, id="6-smiles-whitespace-rejected"),
        pytest.param(case_valence_error_named, id="6-valence-error-named"),
        pytest.param(case_duplicate_smiles_conflicting_labels, id="6-duplicate-conflicting-labels"),
        pytest.param(case_source_row_survives_skips, id="6-source-row-survives-skips"),
        pytest.param(case_foreign_graphs_rejected, id="6-foreign-graphs-rejected"),
        pytest.param(case_errors_name_user_file_and_line, id="8-errors-name-user-file-and-line"),
        pytest.param(case_pyg_argument_order, id="8-pyg-argument-order"),
        pytest.param(case_shipped_bbbp_offline, id="8-shipped-bbbp-offline"),
    ],
    key=lambda row: int(row.id.split("-")[0]),  # by section of the issue; stable within
)


@pytest.mark.parametrize("case", ROWS)
def test_row(case, tmp_path, capsys, monkeypatch):
    if "tmp_path" in inspect.signature(case).parameters:  # a case of files alone
        case(tmp_path)
    else:
        case(Case(tmp_path, capsys, monkeypatch))
