"""Fine-tuning against chemprop v2: seconds per epoch and test metric of ``pyg-molblend
finetune`` (its defaults) and of chemprop's default D-MPNN (``chemprop train``), on the
same split files, in one run.

chemprop is a benchmark-only peer, never a dependency of the package: install it in a
venv of its own (torch first, see ``benchmarks/README.md``) and pass its executable with
``--chemprop``. Without it (no ``--chemprop`` and no ``chemprop`` on ``PATH``) only the
pyg-molblend numbers are measured and the exit status is 0; a ``--chemprop`` path that
does not run is an error (exit 2).

Protocol, per dataset:

* One split for both tools: the scaffold split of ``pyg-molblend finetune``
  (:func:`pyg_molblend.data.scaffold_split` on the molecules the package keeps), written
  once as a ``--split-file`` of CSV data rows for pyg-molblend, and as chemprop's
  ``--splits-file`` of 0-based indices into a CSV holding exactly those molecules, in
  that order (so rows RDKit rejects shift nothing).
* Seconds per epoch: each tool is run for 3 and for 7 epochs (``--timing-epochs``), each
  as a fresh process, wall clock of the whole command; ``(t7 - t3) / 4`` cancels start-up,
  featurization, model set-up and the final test evaluation. pyg-molblend's processed
  cache is built once before any timed run. The two tools alternate (ours 3, chemprop 3,
  ours 7, chemprop 7), with the same ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (``--threads``).
* Test metric: each tool at its own default number of epochs (pyg-molblend 30,
  chemprop 50; ``--metric-epochs`` sets both), model selected on the validation split by
  each tool's own rule. RMSE (ESOL, FreeSolv) or ROC-AUC (BBBP, Tox21), both computed by
  :func:`pyg_molblend.training.metrics.compute_metrics` from the test predictions each
  tool writes, against the same labels.

* Weights (``--checkpoints LABEL=WEIGHTS ...``): the test-metric runs of pyg-molblend are
  repeated once per entry, ``WEIGHTS`` a checkpoint file, ``pretrained`` (the shipped
  weights) or ``scratch``, optionally followed by ``finetune`` options in the same word
  (``"lpft=pretrained --unfreeze-after 5"``: a fine-tuning recipe is compared like a
  checkpoint, and a label keeps its options in ``--json``); the timed runs use the
  defaults. Each run's validation metric is recorded too, and the report ranks the
  entries by validation alone (mean rank over the datasets), the rule for picking a
  pretraining checkpoint without looking at test scores.
* ``--json`` is written after every run, and a run already in that file (same dataset,
  tool, epochs and seed; the scaffold split is deterministic) is not run again, so a long
  comparison continues over several sessions with the same command.

Target (informational, never asserted): pyg-molblend's epoch at most 1.0x chemprop's on
ESOL, BBBP and Tox21 (2 CPU cores, defaults).

Usage::

    python benchmarks/vs_chemprop.py --chemprop .chemprop-venv/bin/chemprop
        [--datasets esol bbbp freesolv tox21] [--seeds 0] [--threads 2]
        [--metric-epochs N | --no-metric] [--json results.json] [--dry-run]
        [--checkpoints scratch=scratch old=pretrained new=runs/pretrain-5m/checkpoint.pt]
    python benchmarks/vs_chemprop.py --json results.json --report-only
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # before torch imports tqdm: no processing bars

import numpy as np
from _common import environment, markdown_table, verdict
from moleculenet import DEFAULT_RAW_DIR, mean_std, prepare_dataset, scaffold_positions

from pyg_molblend.datasets import MoleculeNet
from pyg_molblend.training.io import write_json
from pyg_molblend.training.metrics import compute_metrics, higher_is_better, primary_metric

DEFAULT_DATASETS = ("esol", "bbbp", "freesolv", "tox21")
#: Datasets of the throughput target (pyg-molblend epoch <= TARGET x chemprop's).
TARGET_DATASETS = frozenset({"esol", "bbbp", "tox21"})
TARGET = 1.0
#: chemprop's default ``--warmup-epochs``; ``chemprop train`` rejects ``--epochs`` not above it.
CHEMPROP_WARMUP_EPOCHS = 2
#: ``--checkpoints`` value of a run at pyg-molblend's default weights.
DEFAULT_WEIGHTS = "default"
INSTALL_HINT = (
    "chemprop not found. Install it in a venv of its own (torch first, so pip keeps that "
    "build), then pass its executable:\n"
    "    python3 -m venv .chemprop-venv\n"
    "    .chemprop-venv/bin/pip install torch==2.13.0\n"
    "    .chemprop-venv/bin/pip install chemprop==2.3.1\n"
    "    python benchmarks/vs_chemprop.py --chemprop .chemprop-venv/bin/chemprop"
)


# --------------------------------------------------------------------------- data


def write_split_files(dataset: MoleculeNet, name: str, work: Path) -> dict[str, Any]:
    """The scaffold split as pyg-molblend's ``--split-file`` (CSV data rows), chemprop's
    CSV (the kept molecules in dataset order, a ``smiles`` column and the target columns
    as in the raw file) and chemprop's ``--splits-file`` (indices into that CSV). Returns
    the paths, the sizes and the labels of chemprop's CSV."""
    positions = scaffold_positions(dataset)
    rows = np.asarray(dataset.source_rows, dtype=np.int64)
    directory = work / name
    directory.mkdir(parents=True, exist_ok=True)

    ours = directory / "split_rows.json"
    ours.write_text(json.dumps({k: rows[v].tolist() for k, v in positions.items()}))

    table, smiles_column, targets = dataset.read_table()
    data_csv = directory / "chemprop_data.csv"
    with open(data_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["smiles", *targets])
        for row in rows.tolist():
            record = table.iloc[row]
            writer.writerow([record[smiles_column].strip(), *[record[t] for t in targets]])
    # Sanity: the CSV chemprop reads holds, line for line, the molecules of the dataset.
    smiles = dataset.smiles
    with open(data_csv, newline="") as f:
        written = list(csv.DictReader(f))
    if [r["smiles"] for r in written] != smiles:
        raise SystemExit(f"{name}: chemprop's CSV does not list the dataset's molecules")
    # The labels both tools are scored against: those of that CSV (empty = missing).
    labels = np.array([[float(r[t]) if r[t].strip() else np.nan for t in targets] for r in written])

    theirs = directory / "chemprop_splits.json"
    theirs.write_text(
        json.dumps(
            [
                {
                    "train": positions["train"].tolist(),
                    "val": positions["valid"].tolist(),
                    "test": positions["test"].tolist(),
                }
            ]
        )
    )
    return dict(
        split_file=ours,
        data_csv=data_csv,
        splits_file=theirs,
        targets=targets,
        sizes={k: len(v) for k, v in positions.items()},
        test_positions=positions["test"],
        labels=labels,
        smiles=smiles,
    )


# --------------------------------------------------------------------------- commands


def parse_weights(entries: list[str] | None) -> dict[str, str]:
    """``--checkpoints`` as ``{label: weights}``; none given: the defaults, labelled
    ``pyg-molblend``. Exits with status 2 on a malformed entry or a missing file."""
    if not entries:
        return {"pyg-molblend": DEFAULT_WEIGHTS}
    weights: dict[str, str] = {}
    for entry in entries:
        label, sep, spec = entry.partition("=")
        if not sep or not label or not spec or label in weights or label == "chemprop":
            print(
                f"--checkpoints: {entry!r} is not LABEL=WEIGHTS with a new label other than "
                "'chemprop'",
                file=sys.stderr,
            )
            raise SystemExit(2)
        source = (shlex.split(spec) or [""])[0]
        if source not in ("scratch", "pretrained") and not Path(source).is_file():
            print(f"--checkpoints: {label}: no such checkpoint file {source!r}", file=sys.stderr)
            raise SystemExit(2)
        weights[f"pyg-molblend:{label}"] = spec
    return weights


def ours_command(
    args: argparse.Namespace,
    name: str,
    split: dict,
    epochs: int | None,
    seed: int,
    out: Path,
    weights: str = DEFAULT_WEIGHTS,
) -> list[str]:
    command = [
        *args.pyg_molblend,
        "finetune",
        "--dataset", name,
        "--root", str(args.root_path),
        "--split-file", str(split["split_file"]),
        "--skip-invalid",
        "--seed", str(seed),
        "--device", "cpu",  # as chemprop's --accelerator cpu (the default is CUDA if present)
        "--out", str(out),
    ]  # fmt: skip
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    if args.precision != "fp32":
        command += ["--precision", args.precision]
    source, *options = shlex.split(weights)  # WEIGHTS, then any finetune options
    if source == "scratch":
        command += ["--from-scratch"]
    elif source != DEFAULT_WEIGHTS:
        command += ["--checkpoint", source]
    return command + options


def chemprop_command(
    args: argparse.Namespace,
    task: str,
    split: dict,
    epochs: int | None,
    seed: int | None,
    out: Path,
) -> list[str]:
    """``chemprop train`` at its defaults on our CSV and splits file, on the CPU. With
    ``seed`` None no ``--pytorch-seed`` is passed (chemprop's default: a random seed;
    a given seed also makes Lightning ``deterministic``), as in the timed runs."""
    command = [
        args.chemprop or "chemprop",
        "train",
        "--data-path", str(split["data_csv"]),
        "--task-type", task,
        "--smiles-columns", "smiles",
        "--target-columns", *split["targets"],
        "--splits-file", str(split["splits_file"]),
        "--accelerator", "cpu",
        "--devices", "1",
        "--num-workers", "0",
        "--output-dir", str(out),
    ]  # fmt: skip
    if seed is not None:
        command += ["--pytorch-seed", str(seed)]
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    return command


def tool_command(
    args: argparse.Namespace,
    tool: str,
    name: str,
    task: str,
    split: dict,
    epochs: int | None,
    seed: int,
    tag: str,
    work: Path,
) -> tuple[list[str], Path]:
    """The command of one run (``tag``: ``e3``, ``e7``, ... for a timed run, ``metric``)
    and its output directory."""
    out = work / name / f"{tool.replace(':', '_')}_{tag}_seed{seed}"
    if tool != "chemprop":
        weights = args.weights.get(tool, DEFAULT_WEIGHTS)
        return ours_command(args, name, split, epochs, seed, out, weights), out
    seeded = seed if tag == "metric" else None  # timed runs: chemprop's default seeding
    return chemprop_command(args, task, split, epochs, seeded, out), out


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TQDM_DISABLE="1",
        PYTHONWARNINGS="ignore",
    )
    return env


def run_timed(command: list[str], log: Path, env: dict[str, str]) -> float:
    """Wall seconds of ``command``; its output goes to ``log``. Raises on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        f.write(shlex.join(command) + "\n\n")
        f.flush()
        start = time.perf_counter()
        code = subprocess.call(command, stdout=f, stderr=subprocess.STDOUT, env=env)
        seconds = time.perf_counter() - start
    if code:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"exit {code}: {shlex.join(command)}\n--- {log} (tail):\n{tail}")
    return seconds


# --------------------------------------------------------------------------- metrics


def ours_metric(out: Path, task: str, split: dict) -> tuple[float, float]:
    """The test metric of a ``pyg-molblend finetune`` run, recomputed from its
    ``predictions.csv`` (the test molecules, named by CSV data row) against the labels
    chemprop is scored on, and the validation metric its ``metrics.json`` reports."""
    names = [f"{t}_pred" for t in split["targets"]]
    rows = json.loads(split["split_file"].read_text())["test"]
    position = {row: k for k, row in enumerate(rows)}
    with open(out / "predictions.csv", newline="") as f:
        records = list(csv.DictReader(f))
    if sorted(int(r["row"]) for r in records) != sorted(rows):
        raise ValueError(f"{out}/predictions.csv does not hold the test split")
    test = split["test_positions"]
    pred = np.full((len(test), len(names)), np.nan)
    for r in records:
        pred[position[int(r["row"])]] = [float(r[n]) for n in names]
    value = compute_metrics(task, split["labels"][test], pred)[primary_metric(task)]
    reported = json.loads((out / "metrics.json").read_text())
    if not math.isclose(value, reported["test"], rel_tol=1e-4, abs_tol=1e-4):
        raise ValueError(f"{out}: recomputed test metric {value} != metrics.json's {reported}")
    return value, reported["valid"]


def chemprop_metric(out: Path, task: str, split: dict) -> tuple[float, None]:
    """The test metric of a ``chemprop train`` run, from its ``test_predictions.csv``
    (the test molecules in the order of the splits file; checked by SMILES)."""
    found = sorted(out.rglob("test_predictions.csv"))
    if len(found) != 1:
        raise ValueError(f"expected one test_predictions.csv under {out}, found {found}")
    with open(found[0], newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        records = list(reader)
    test = split["test_positions"]
    expected = [split["smiles"][i] for i in test]
    if len(records) != len(test) or [r[0] for r in records] != expected:
        raise ValueError(f"{found[0]}: not the test molecules of the splits file, in order")
    columns = [header.index(t) for t in split["targets"]]
    pred = np.array([[float(r[c]) for c in columns] for r in records])
    return compute_metrics(task, split["labels"][test], pred)[primary_metric(task)], None


# --------------------------------------------------------------------------- helpers


def resolve_chemprop(given: str | None) -> str | None:
    """The chemprop executable, or None when it was not asked for and is not on PATH;
    exits with status 2 when the one given does not exist."""
    if given is None:
        return shutil.which("chemprop")
    path = shutil.which(given)
    if path is None:
        print(f"--chemprop {given!r}: no such executable.\n{INSTALL_HINT}", file=sys.stderr)
        raise SystemExit(2)
    return path


def chemprop_version(executable: str, env: dict[str, str]) -> str:
    """chemprop's version, from the interpreter of its venv (this also loads torch and
    chemprop once, so that a cold disk cache does not land in the first timed run)."""
    python = Path(executable).with_name("python")
    code = "import chemprop, torch; print(chemprop.__version__, torch.__version__)"
    if python.exists():
        result = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, env=env, check=False
        )
        if result.returncode == 0:
            chemprop, torch_version = result.stdout.split()
            return f"chemprop {chemprop} (torch {torch_version})"
    return "chemprop (version unknown)"


def per_epoch(times: dict[str, float], short: int, long: int) -> float:
    """Seconds per epoch from the wall clocks of the runs of ``short`` and ``long`` epochs
    (keyed by the epoch count as a string, as in the JSON)."""
    return (times[str(long)] - times[str(short)]) / (long - short)


#: Arguments that must match for runs recorded in an earlier ``--json`` to be reused (a
#: file from before ``--precision`` existed was measured in fp32).
REUSE_KEYS = ("threads", "timing_epochs", "metric_epochs", "precision")
_RECORDED_DEFAULTS = {"precision": "fp32"}


def load_previous(
    args: argparse.Namespace,
) -> tuple[dict[str, Any], dict[str, str], str | None]:
    """The results of an earlier run recorded in ``--json``, the weights of its labels and
    the chemprop version that made its chemprop runs (empty or None if none), after checking
    it measured the same thing; exits with status 2 otherwise."""
    if not args.json or not Path(args.json).exists():
        return {}, {}, None
    payload = json.loads(Path(args.json).read_text())
    old = payload.get("args", {})
    for key in REUSE_KEYS:
        recorded = old.get(key, _RECORDED_DEFAULTS.get(key))
        if recorded != getattr(args, key):
            print(
                f"--json {args.json}: its runs used --{key.replace('_', '-')} {recorded}, "
                f"this one {getattr(args, key)}; pass another --json to start afresh",
                file=sys.stderr,
            )
            raise SystemExit(2)
    for tool, weights in old.get("weights", {}).items():
        if args.weights.get(tool, weights) != weights:
            print(
                f"--json {args.json}: {tool} was fine-tuned from {weights!r} there, "
                f"{args.weights[tool]!r} here; use another label",
                file=sys.stderr,
            )
            raise SystemExit(2)
    return payload.get("results", {}), old.get("weights", {}), payload.get("chemprop")


def recorded(entry: dict[str, Any], tool: str, kind: str, epochs: int | None, seed: int) -> bool:
    """Whether ``entry`` (a dataset's results, earlier runs included) holds this run."""
    if kind == "time":
        return str(epochs) in entry["times"].get(tool, {}).get(str(seed), {})
    return any(
        r["seed"] == seed and r.get("epochs") == epochs for r in entry["metrics"].get(tool, [])
    )


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def cell(records: list[dict[str, Any]], key: str) -> str:
    """``mean ± sample std (n)`` of ``key`` over the records (seeds)."""
    values = [r[key] for r in records if r.get(key) is not None and not math.isnan(r[key])]
    return f"{mean_std(values, 3)} ({len(values)})" if values else "-"


def _validation_table(
    results: dict[str, Any], tools: list[str]
) -> tuple[list[list[str]], dict[str, float], dict[str, float]]:
    """Per dataset run for every entry: the mean validation metric of each entry (rows),
    and over those datasets each entry's mean rank and mean normalised score (0 for a
    dataset's best entry, 1 for its worst, linear in between)."""
    ranks: dict[str, list[float]] = {tool: [] for tool in tools}
    scores: dict[str, list[float]] = {tool: [] for tool in tools}
    rows = []
    for name, entry in results.items():
        means = {
            tool: mean([r.get("valid") for r in entry["metrics"].get(tool, [])]) for tool in tools
        }
        if any(v is None for v in means.values()):
            continue  # a dataset not run for every entry yet
        sign = -1.0 if higher_is_better(entry["metric"]) else 1.0
        order = sorted(tools, key=lambda t: sign * means[t])
        for rank, tool in enumerate(order, start=1):
            ranks[tool].append(rank)
        best, worst = means[order[0]], means[order[-1]]
        spread = abs(worst - best)
        for tool in tools:
            scores[tool].append(abs(means[tool] - best) / spread if spread > 0 else 0.0)
        rows.append([name, entry["metric"], *[fmt(means[t], 3) for t in tools]])
    mean_rank = {t: float(np.mean(r)) for t, r in ranks.items() if r}
    mean_score = {t: float(np.mean(v)) for t, v in scores.items() if v}
    return rows, mean_rank, mean_score


def pick_by_validation(results: dict[str, Any], tools: list[str]) -> tuple[str | None, list[str]]:
    """The entry with the lowest mean validation rank over the datasets run for every
    entry (test scores play no part), a tie going to the lower mean normalised score; and
    the entries tied in mean rank. ``(None, [])`` when no dataset has every entry."""
    _, mean_rank, mean_score = _validation_table(results, tools)
    return _pick(tools, mean_rank, mean_score)


def _pick(
    tools: list[str], mean_rank: dict[str, float], mean_score: dict[str, float]
) -> tuple[str | None, list[str]]:
    """:func:`pick_by_validation` from the ranks and scores of :func:`_validation_table`."""
    if not mean_rank:
        return None, []
    best_rank = min(mean_rank.values())
    tied = [t for t in tools if mean_rank[t] == best_rank]
    return min(tied, key=lambda t: mean_score[t]), tied


def validation_ranking(results: dict[str, Any], tools: list[str]) -> str:
    """The pyg-molblend weights ranked on each dataset by their mean validation metric,
    their mean rank and mean normalised score, and the pick (:func:`pick_by_validation`)."""
    rows, mean_rank, mean_score = _validation_table(results, tools)
    if not rows:
        return "validation ranking: no dataset has validation results for every entry yet"
    rows.append(["mean rank", "", *[f"{mean_rank[t]:.2f}" for t in tools]])
    rows.append(["mean normalised", "", *[f"{mean_score[t]:.3f}" for t in tools]])
    pick, tied = _pick(tools, mean_rank, mean_score)
    why = (
        f" (a tie in mean rank between {', '.join(tied)}, broken by the mean normalised score)"
        if len(tied) > 1
        else ""
    )
    return (
        markdown_table(
            ["dataset (validation)", "metric", *tools], rows, align="ll" + "r" * len(tools)
        )
        + f"\npicked by validation alone (lowest mean rank over {len(rows) - 2} datasets): "
        + f"{pick}{why}"
    )


def report(
    results: dict[str, Any],
    weights: list[str],
    short: int,
    long: int,
    load_at_start: list[float],
) -> str:
    """The comparison table of every dataset (seconds per epoch, their ratio and target,
    each entry's test metric) and, with several weights, their validation ranking; sets
    each dataset's ``ratio`` and ``target``."""
    tools = [*weights, "chemprop"]
    rows = []
    for name, entry in results.items():
        ours_epoch = entry.get("pyg-molblend_s_per_epoch")
        their_epoch = entry.get("chemprop_s_per_epoch")
        ratio = ours_epoch / their_epoch if ours_epoch and their_epoch else None
        entry["ratio"] = ratio
        if name in TARGET_DATASETS and ratio is not None:
            entry["target"] = verdict(ratio <= TARGET)
        arrow = "↑" if higher_is_better(entry["metric"]) else "↓"
        rows.append(
            [
                name,
                "/".join(str(v) for v in entry["sizes"].values()),
                fmt(ours_epoch),
                fmt(their_epoch),
                "-" if ratio is None else f"{ratio:.2f}x",
                entry.get("target", "-"),
                f"{entry['metric']} {arrow}",
                *[cell(entry["metrics"].get(tool, []), "value") for tool in tools],
                " ".join(f"{x:.2f}" for x in entry["load_average"]),
            ]
        )
    text = markdown_table(
        [
            "dataset",
            "train/valid/test",
            "pyg-molblend s/epoch",
            "chemprop s/epoch",
            "ratio",
            f"<= {TARGET:.1f}x",
            "metric",
            *[f"{tool} test" for tool in tools],
            "load avg at start",
        ],
        rows,
        align="lrrrrll" + "r" * len(tools) + "r",
    )
    if len(weights) > 1:
        text += "\n\n" + validation_ranking(results, weights)
    return text + (
        f"\n\ns/epoch = (t{long} - t{short}) / {long - short}, wall clock of whole commands "
        "(mean over the seeds recorded); ratio = pyg-molblend / chemprop; target "
        f"<= {TARGET:.1f}x on {', '.join(sorted(TARGET_DATASETS))} (informational). Load "
        "average (1/5/15 min) when the dataset started; at the start of the run "
        f"{' '.join(f'{x:.2f}' for x in load_at_start)}."
    )


def mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else None


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    parser.add_argument(
        "--chemprop",
        default=None,
        help="chemprop executable (default: 'chemprop' on PATH; without it, only "
        "pyg-molblend is measured)",
    )
    parser.add_argument(
        "--pyg-molblend",
        default=None,
        help="pyg-molblend executable (default: the one next to this Python, else "
        "'python -m pyg_molblend')",
    )
    parser.add_argument("--raw-dir", default=DEFAULT_RAW_DIR, help="offline MoleculeNet CSVs")
    parser.add_argument(
        "--root", default=None, help="pyg-molblend dataset cache (default: under --work)"
    )
    parser.add_argument(
        "--work",
        default=None,
        help="split files, chemprop CSVs, run outputs and logs (default: a temporary "
        "directory, removed at the end)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--threads", type=int, default=2, help="OMP/MKL threads of both tools (default 2)"
    )
    parser.add_argument(
        "--timing-epochs",
        nargs=2,
        type=int,
        default=[3, 7],
        metavar=("SHORT", "LONG"),
        help="epochs of the two timed runs (default 3 7; chemprop refuses fewer epochs "
        f"than {CHEMPROP_WARMUP_EPOCHS + 1}: its default --warmup-epochs is "
        f"{CHEMPROP_WARMUP_EPOCHS})",
    )
    parser.add_argument(
        "--metric-epochs",
        type=int,
        default=None,
        help="epochs of the test-metric runs of both tools (default: each tool's own, "
        "pyg-molblend 30, chemprop 50)",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16"],
        help="pyg-molblend's --precision (chemprop always runs fp32) (default fp32)",
    )
    parser.add_argument("--no-metric", action="store_true", help="timing runs only")
    parser.add_argument("--no-timing", action="store_true", help="test-metric runs only")
    parser.add_argument(
        "--checkpoints",
        nargs="+",
        default=None,
        metavar="LABEL=WEIGHTS",
        help="test-metric runs of pyg-molblend once per entry, WEIGHTS a checkpoint file, "
        "'pretrained' or 'scratch', optionally followed by finetune options in the same "
        "quoted word ('lpft=pretrained --unfreeze-after 5'); default: one run at the "
        "defaults; ranked by validation",
    )
    parser.add_argument(
        "--json",
        default=None,
        help="write results after every run; runs already in this file are not run again",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="prepare the splits, print the commands, stop"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="print the report of the runs recorded in --json and stop (nothing is run)",
    )
    args = parser.parse_args()
    if args.report_only:
        if not args.json or not Path(args.json).exists():
            parser.error(f"--report-only reads an existing --json file, got {args.json!r}")
        payload = json.loads(Path(args.json).read_text())
        recorded_short, recorded_long = payload["args"]["timing_epochs"]
        weights = list(payload["args"]["weights"])
        results = payload["results"]
        print(
            report(
                results, weights, recorded_short, recorded_long, payload["load_average_at_start"]
            )
        )
        return 0

    names = [n.lower() for n in args.datasets]
    unknown = sorted(set(names) - set(MoleculeNet.names))
    if unknown:
        raise SystemExit(f"Unknown datasets {unknown}; choose from {sorted(MoleculeNet.names)}")
    short, long = args.timing_epochs
    if not 0 < short < long:
        raise SystemExit("--timing-epochs: need 0 < SHORT < LONG")
    if args.no_metric and args.no_timing:
        parser.error("--no-metric and --no-timing leave nothing to run")

    env = child_env(args.threads)
    args.weights = parse_weights(args.checkpoints)
    previous, previous_weights, previous_peer = load_previous(args)
    # Labels run before and not named now stay recorded (and reported) with their weights.
    all_weights = {**previous_weights, **args.weights}
    args.chemprop = resolve_chemprop(args.chemprop)
    if args.chemprop is not None or args.dry_run:
        for option, epochs in (("--timing-epochs", short), ("--metric-epochs", args.metric_epochs)):
            if epochs is not None and epochs <= CHEMPROP_WARMUP_EPOCHS:
                raise SystemExit(
                    f"{option}: chemprop train needs more than {CHEMPROP_WARMUP_EPOCHS} epochs "
                    f"(its default --warmup-epochs), got {epochs}"
                )
    local = Path(sys.executable).with_name("pyg-molblend")
    if args.pyg_molblend:
        args.pyg_molblend = [args.pyg_molblend]
    elif local.exists():
        args.pyg_molblend = [str(local)]
    else:
        args.pyg_molblend = [sys.executable, "-m", "pyg_molblend"]
    load_at_start = os.getloadavg()
    print(environment() + f"; {args.threads} threads for each tool (OMP/MKL_NUM_THREADS)")
    if args.chemprop is None:
        print(INSTALL_HINT + "\nMeasuring pyg-molblend only.\n")
        peer = None
    else:
        peer = chemprop_version(args.chemprop, env)
        print(f"peer: {peer} at {args.chemprop}")

    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="vs_chemprop_")
        work = Path(tmp.name)
    else:
        work = Path(args.work)
    args.root_path = Path(args.root) if args.root else work / "data"
    print(f"raw CSVs from {args.raw_dir}; pyg-molblend cache {args.root_path}; work dir {work}")
    print(
        "protocol: scaffold split of pyg-molblend for both tools; "
        + (
            "no timed runs"
            if args.no_timing
            else f"s/epoch = (t{long} - t{short}) / {long - short} from whole-command wall clocks"
        )
        + "; test metric at "
        + (
            f"{args.metric_epochs} epochs for both"
            if args.metric_epochs
            else "each tool's default epochs (30 / 50)"
        )
        + (" (skipped)" if args.no_metric else "")
        + f"; seeds {args.seeds}\n"
    )

    results: dict[str, Any] = dict(previous)  # other datasets of the file stay in it
    payload: dict[str, Any] = dict(
        args={
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "weights": all_weights,  # every label in the file, not just this run's
        },
        environment=environment(),
        load_average_at_start=load_at_start,
        # a run without chemprop adding to a file keeps the version that made its chemprop runs
        chemprop=peer if peer is not None else previous_peer,
        finished=False,
        results=results,
    )
    failed = False
    for name in names:
        start = time.perf_counter()
        dataset = prepare_dataset(name, args.root_path, Path(args.raw_dir))  # the cache, once
        split = write_split_files(dataset, name, work)
        task = dataset.task_type
        metric = primary_metric(task)
        entry: dict[str, Any] = dict(
            task=task,
            metric=metric,
            num_tasks=dataset.num_tasks,
            sizes=split["sizes"],
            skipped_invalid=len(dataset.skipped),
            skipped_too_large=len(dataset.too_large),
            prepare_seconds=time.perf_counter() - start,
            load_average=os.getloadavg(),
            # Earlier runs of the --json file first: they are kept, and not run again.
            times={"pyg-molblend": {}, "chemprop": {}, **previous.get(name, {}).get("times", {})},
            metrics={
                **{tool: [] for tool in [*args.weights, "chemprop"]},
                **previous.get(name, {}).get("metrics", {}),
            },
            commands=previous.get(name, {}).get("commands", {}),
        )
        results[name] = entry
        print(
            f"{name}: {len(dataset)} molecules ({len(dataset.skipped)} invalid SMILES, "
            f"{len(dataset.too_large)} too large skipped), train/valid/test "
            f"{'/'.join(str(v) for v in split['sizes'].values())}; load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            flush=True,
        )

        peers = ["chemprop"] if peer is not None or args.dry_run else []
        plan = []  # (tool, kind, epochs, seed)
        for seed in [] if args.no_timing else args.seeds:
            for epochs in (short, long):
                plan += [(tool, "time", epochs, seed) for tool in ["pyg-molblend", *peers]]
        if not args.no_metric:
            for seed in args.seeds:
                plan += [
                    (tool, "metric", args.metric_epochs, seed) for tool in [*args.weights, *peers]
                ]

        if args.dry_run:
            for tool, kind, epochs, seed in plan:
                tag = f"e{epochs}" if kind == "time" else "metric"
                command, _ = tool_command(args, tool, name, task, split, epochs, seed, tag, work)
                print(f"  [{tool} {kind}] {shlex.join(command)}")
            continue

        for tool, kind, epochs, seed in plan:
            tag = f"e{epochs}" if kind == "time" else "metric"
            command, out = tool_command(args, tool, name, task, split, epochs, seed, tag, work)
            if recorded(entry, tool, kind, epochs, seed):
                print(f"  {tool:12s} {tag} seed {seed}: in {args.json} already", flush=True)
                continue
            shutil.rmtree(out, ignore_errors=True)
            entry["commands"][f"{tool} {tag} seed {seed}"] = shlex.join(command)
            try:
                seconds = run_timed(command, out.with_name(out.name + ".log"), env)
            except RuntimeError as error:
                print(f"  {tool} {tag} seed {seed} FAILED: {error}", file=sys.stderr)
                entry.setdefault("errors", []).append(f"{tool} {tag} seed {seed}: {error}")
                failed = True
                continue
            if kind == "time":
                entry["times"][tool].setdefault(str(seed), {})[str(epochs)] = seconds
                print(f"  {tool:12s} {epochs:2d} epochs, seed {seed}: {seconds:.1f} s", flush=True)
            else:
                try:
                    value, valid = (chemprop_metric if tool == "chemprop" else ours_metric)(
                        out, task, split
                    )
                except (OSError, ValueError) as error:
                    print(f"  {tool} metric seed {seed}: {error}", file=sys.stderr)
                    entry.setdefault("errors", []).append(f"{tool} metric seed {seed}: {error}")
                    failed = True
                    continue
                entry["metrics"][tool].append(
                    dict(seed=seed, epochs=epochs, value=value, valid=valid, seconds=seconds)
                )
                print(
                    f"  {tool:12s} test {metric} {value:.4f} (seed {seed}, "
                    f"{'default' if epochs is None else epochs} epochs, {seconds:.0f} s)",
                    flush=True,
                )
            if args.json:  # after every run: a session may end in the middle of a dataset
                write_json(args.json, payload)
        for tool, by_seed in entry["times"].items():
            epoch_times = [
                per_epoch(t, short, long)
                for t in by_seed.values()
                if str(short) in t and str(long) in t
            ]
            entry[f"{tool}_s_per_epoch"] = mean(epoch_times)
            # What the timed runs spend outside the epochs (start-up, featurization, ...):
            # negative when other load slowed the long run more than the short one.
            overheads = [
                t[str(short)] - short * per_epoch(t, short, long)
                for t in by_seed.values()
                if str(short) in t and str(long) in t
            ]
            entry[f"{tool}_overhead_s"] = mean(overheads)
            if any(o < 0 for o in overheads):
                print(
                    f"  warning: {tool}'s time outside the epochs comes out negative "
                    f"({min(overheads):.0f} s): other load disturbed the timed runs; re-run, "
                    "or give more --seeds",
                    flush=True,
                )
        if args.json:
            write_json(args.json, payload)

    if args.dry_run:
        print("\n(dry run: splits written under the work dir, nothing trained)")
        if tmp is not None:
            tmp.cleanup()
        return 0

    text = report(results, list(all_weights), short, long, load_at_start)  # sets ratios
    payload["finished"] = True
    if args.json:
        write_json(args.json, payload)
    print()
    print(text)
    if args.json:
        print(f"wrote {args.json}")
    if tmp is not None:
        tmp.cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
