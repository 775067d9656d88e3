"""Issue 10's bad inputs and faults, one row each: every row failed on commit 575bbf8.

The table is :data:`ROWS`; each case is a plain function of a :class:`Case` (temporary
folder, captured output, monkeypatch). Ids start with the issue's section number:
1 checkpoints, 2 caches, 3 evaluate's split, 4 non-finite numbers, 5 failing late,
6 smaller silent cases, 7 the suite (tests/test_model.py), 8 what a newcomer reads.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pyg_molblend.cli import main
from pyg_molblend.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

DATA = Path(__file__).parent / "data"
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
        loss, parts = real(self, *args, **kwargs)
        return (loss * math.nan if len(calls) >= 3 else loss), parts

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


def case_unwritable_out_fails_before_training(c: Case):
    import pyg_molblend.cli.labelled as labelled

    def never(*args, **kwargs):
        raise AssertionError("trained although --out cannot be written")

    c.monkeypatch.setattr(labelled, "finetune", never)
    blocker = c.tmp / "file"
    blocker.write_text("")
    args = ["--csv", BBBP, "--targets", "p_np", "--task", "classification"]
    code = main(["finetune", *args, "--out", str(blocker / "out"), *FAST])
    err = c.err()
    assert code == 2 and "Cannot write to --out" in err and "file" in err


def case_embed_checks_output_before_work(c: Case):
    import pyg_molblend.cli.embed as embed

    def never(*args, **kwargs):
        raise AssertionError("embedded although --out cannot be written")

    c.monkeypatch.setattr(embed, "embed_smiles", never)
    blocker = c.tmp / "file"
    blocker.write_text("")
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
    pretrain = importlib.import_module("pyg_molblend.training.pretrain")
    real = pretrain.check_finite_step

    def killed_at_step_4(loss, grad_norm, step, lr, kept):
        if step == 4:
            raise KeyboardInterrupt  # the process dies after logging step 3
        return real(loss, grad_norm, step, lr, kept)

    out = c.tmp / "pre"
    c.monkeypatch.setattr(pretrain, "check_finite_step", killed_at_step_4)
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
    import pyg_molblend.cli.labelled as labelled

    code, out = _finetune(c, "--split", "random")
    assert code == 0
    before = (out / "predictions.csv").read_bytes()
    real_writer = labelled.csv.writer

    class Dies:
        def __init__(self, f):
            self.inner, self.rows = real_writer(f), 0

        def writerow(self, row):
            self.rows += 1
            if self.rows == 3:
                raise OSError(28, "No space left on device")
            self.inner.writerow(row)

    c.monkeypatch.setattr(labelled.csv, "writer", Dies)
    code, _ = _finetune(c, "--split", "random", "--seed", "1")
    assert code == 2 and "No space left" in c.err()
    assert (out / "predictions.csv").read_bytes() == before
    c.monkeypatch.undo()

    def no_model(*args, **kwargs):
        raise CheckpointError("cannot write model.pt")

    c.monkeypatch.setattr(labelled, "save_checkpoint", no_model)
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


ROWS = [
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
    pytest.param(case_resume_says_where_it_resumes, id="5-resume-says-where"),
    pytest.param(case_resume_cuts_the_log_back_to_the_checkpoint, id="5-resume-log-cut"),
    pytest.param(case_embed_prints_the_file_it_writes, id="5-embed-out-npy"),
    pytest.param(case_split_file_holds_csv_rows_under_skip_invalid, id="6-split-file-csv-rows"),
    pytest.param(case_atom_limit_in_pretrain_and_embed, id="6-max-atoms-everywhere"),
    pytest.param(case_atomic_outputs_and_model_before_metrics, id="6-atomic-writes"),
    pytest.param(case_one_exit_convention, id="8-exit-2-convention"),
    pytest.param(case_cli_messages_name_flags, id="8-cli-flags-and-user-lines"),
    pytest.param(case_pretrain_refuses_to_overwrite, id="8-pretrain-overwrite"),
]


@pytest.mark.parametrize("case", ROWS)
def test_row(case, tmp_path, capsys, monkeypatch):
    case(Case(tmp_path, capsys, monkeypatch))
