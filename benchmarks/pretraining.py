"""What pretraining buys: the experiments of ``benchmarks/RESULTS.md`` and the report.

Every experiment writes one JSON file under ``--results`` (default
``benchmarks/results``); ``report`` turns whatever is there into ``RESULTS.md`` and PNG
plots, so experiments can run in separate sessions and the report is always regenerated
from the raw numbers. The fine-tuning comparisons on MoleculeNet (pretrained vs scratch vs
GIN, the pretraining ablation at 1,000 and at 4,000 steps, the blend-ratio sweep) are runs
of ``benchmarks/moleculenet.py --checkpoint ... --json`` (files
``moleculenet_{scratch_gin,pretrained}*.json``, ``moleculenet_ablation_*.json``,
``moleculenet_ablation4k_*.json``); this script adds:

* ``lowdata``: the low-data protocol of the SMILES Transformer (Honda et al., 2019):
  frozen graph embeddings (:func:`pyg_molblend.cli.embed.embed_smiles`, what
  ``pyg-molblend embed`` writes) of each checkpoint, and ECFP4 (RDKit Morgan radius 2,
  2048 bits) as the baseline, each fed to a logistic regression (classification, one per
  task) or ridge regression, trained on 100, 250 or 500 molecules drawn from the scaffold
  split's training part and scored on its test part. Settings are fixed in advance:
  features standardised (embeddings only), ``LogisticRegression(C=1, max_iter=5000)``,
  ``Ridge(alpha=1)``; 3 draws per size.
* ``qm9``: HOMO-LUMO gap (eV) on a QM9 part the pretraining never saw, fine-tuned in
  ``3d``, ``2d`` and ``2d+3d`` modes from a checkpoint and from scratch: random 80/10/10
  split per seed (QM9 has no scaffold structure worth splitting on), epoch selected on
  validation RMSE, test MAE reported.
* ``ship``: copies a pretraining checkpoint's weights (no optimizer state) into the
  package as the ``pretrained`` checkpoint.
* ``report``: tables and plots from the JSON files.

Usage::

    python benchmarks/pretraining.py lowdata --checkpoint pretrained --checkpoint random
    python benchmarks/pretraining.py qm9 --root runs/qm9-heldout --checkpoint pretrained
    python benchmarks/pretraining.py ship runs/pretrain-blend/checkpoint.pt
    python benchmarks/pretraining.py report
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if "--progress" not in sys.argv:  # before tqdm is imported: no dataset-processing bars
    os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import torch
from _common import REPO, environment, markdown_table
from moleculenet import (
    DEFAULT_RAW_DIR,
    mean_std,
    parse_checkpoint,
    prepare_dataset,
    scaffold_positions,
    single_thread,
)

from pyg_molblend import __version__
from pyg_molblend.cli.embed import embed_smiles
from pyg_molblend.constants import DEFAULT_MAX_ATOMS
from pyg_molblend.data import random_split
from pyg_molblend.data.featurize import quiet_rdkit
from pyg_molblend.models import MoleBlend, MoleBlendPredictor
from pyg_molblend.training.checkpoint import (
    PRETRAINED_PATH,
    load_checkpoint,
    load_encoder,
    save_checkpoint,
)
from pyg_molblend.training.finetune import FinetuneConfig, finetune
from pyg_molblend.training.utils import seed_everything
from pyg_molblend.transforms import AddShortestPath

RESULTS = REPO / "benchmarks" / "results"
#: The 4,000-step weights, shipped as ``pretrained`` until the 5M-visit run's pick; sections
#: 1-9 of RESULTS.md measured them.
FOUR_K_WEIGHTS = REPO / "benchmarks" / "weights" / "pretrained_small_4k.pt"
LOWDATA_DATASETS = ("bbbp", "esol", "freesolv", "sider", "tox21")
LOWDATA_SIZES = (100, 250, 500)
#: Checkpoint names of ``moleculenet.py --checkpoint NAME=PATH`` in the ablation table
#: (input relations of pretraining, equal budget) and the blend-ratio table.
COMPARISON = ["moleblend", "pretrained", "gin"]
ABLATION = ["moleblend", "blend-2:2:6", "2d-only", "3d-only"]
RATIO_SWEEP = ["blend-4:4:2", "blend-3:3:4", "blend-2:2:6", "blend-1:1:8"]


# ----------------------------------------------------------------------- checkpoints


def random_checkpoint(path: Path, preset: str = "small", seed: int = 0) -> Path:
    """A checkpoint of an untrained encoder (seeded): the control for frozen embeddings."""
    seed_everything(seed)
    model = MoleBlend.from_preset(preset)
    save_checkpoint(
        path,
        {"kind": "pretrain", "encoder_config": model.config, "encoder_state": model.state_dict()},
    )
    return path


def resolve(path: str, workdir: Path) -> str:
    """``random`` is an untrained ``small`` encoder; anything else a checkpoint path/name."""
    if path == "random":
        return str(random_checkpoint(workdir / "random.pt"))
    return path


# ----------------------------------------------------------------------- low-data


def ecfp4(smiles: list[str]) -> np.ndarray:
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    rows = np.zeros((len(smiles), 2048), dtype=np.float32)
    for i, s in enumerate(smiles):
        with quiet_rdkit():
            mol = Chem.MolFromSmiles(s)
        if mol is None:  # the datasets hold only parsable SMILES; never silently zero
            raise ValueError(f"ECFP4: RDKit cannot parse {s!r}")
        rows[i] = generator.GetFingerprintAsNumPy(mol)
    return rows


def fit_score(
    task: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    scale: bool,
) -> tuple[float, int]:
    """Test ROC-AUC (mean over tasks that have both classes in train and test) or RMSE,
    and the number of tasks scored."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    if scale:
        scaler = StandardScaler().fit(x_train)
        x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    scores = []
    for t in range(y_train.shape[1]):
        train = ~np.isnan(y_train[:, t])
        test = ~np.isnan(y_test[:, t])
        if task == "classification":
            labels = y_train[train, t]
            if len(np.unique(labels)) < 2 or len(np.unique(y_test[test, t])) < 2:
                continue
            model = LogisticRegression(C=1.0, max_iter=5000).fit(x_train[train], labels)
            scores.append(roc_auc_score(y_test[test, t], model.predict_proba(x_test[test])[:, 1]))
        else:
            model = Ridge(alpha=1.0).fit(x_train[train], y_train[train, t])
            err = model.predict(x_test[test]) - y_test[test, t]
            scores.append(float(np.sqrt(np.mean(err**2))))
    return (float(np.mean(scores)) if scores else math.nan), len(scores)


def run_lowdata(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="lowdata_"))
    checkpoints = {name: resolve(path, workdir) for name, path in args.checkpoint}
    results: dict[str, Any] = {}
    for name in args.datasets:
        dataset = prepare_dataset(
            name, Path(args.root), Path(args.raw_dir), max_atoms=args.max_atoms
        )
        split = scaffold_positions(dataset)
        smiles = dataset.smiles
        y = dataset._data.y.view(len(dataset), -1).numpy().astype(float)
        features: dict[str, np.ndarray] = {}
        start = time.perf_counter()
        features["ECFP4"] = ecfp4(smiles)
        for label, path in checkpoints.items():
            with single_thread():
                features[label] = embed_smiles(path, smiles, mode="2d", batch_size=128)
            if not np.isfinite(features[label]).all():
                raise ValueError(f"{label}: non-finite embedding on {name}")
        print(f"{name}: features of {len(smiles)} molecules in {time.perf_counter() - start:.0f} s")
        entry: dict[str, Any] = {
            "task": dataset.task_type,
            "num_tasks": dataset.num_tasks,
            "train_pool": len(split["train"]),
            "test": len(split["test"]),
            "runs": [],
        }
        test = split["test"]
        for size in args.sizes:
            if size > len(split["train"]):
                continue
            for seed in args.seeds:
                rng = np.random.default_rng(seed)
                train = rng.choice(split["train"], size=size, replace=False)
                for label, x in features.items():
                    score, tasks = fit_score(
                        dataset.task_type,
                        x[train],
                        y[train],
                        x[test],
                        y[test],
                        scale=label != "ECFP4",
                    )
                    entry["runs"].append(
                        dict(features=label, size=size, seed=seed, score=score, tasks=tasks)
                    )
            summary = {
                label: mean_std(
                    [
                        r["score"]
                        for r in entry["runs"]
                        if r["features"] == label and r["size"] == size
                    ],
                    3,
                )
                for label in features
            }
            print(f"  n={size}: " + ", ".join(f"{k} {v}" for k, v in summary.items()), flush=True)
        entry["metric"] = "roc_auc" if dataset.task_type == "classification" else "rmse"
        results[name] = entry
    return {"checkpoints": dict(args.checkpoint), "results": results}


# ----------------------------------------------------------------------- QM9


class SelectTarget:
    """Keeps one column of QM9's ``y`` (``[1, 15]`` -> ``[1, 1]``)."""

    def __init__(self, column: int) -> None:
        self.column = column

    def __call__(self, data: Any) -> Any:
        data = data.clone()
        data.y = data.y[:, self.column : self.column + 1]
        return data


def run_qm9(args: argparse.Namespace) -> dict[str, Any]:
    from pyg_molblend.datasets import QM9

    column = QM9.target_names.index(args.target)
    with single_thread():
        dataset = QM9(args.root, pre_transform=AddShortestPath(), transform=SelectTarget(column))
    indices = dataset._data.idx.view(-1)
    print(
        f"QM9 {args.root}: {len(dataset)} molecules, indices {int(indices.min())}-"
        f"{int(indices.max())}, target {args.target} ({QM9.target_units[column]})"
    )
    workdir = Path(tempfile.mkdtemp(prefix="qm9_"))
    inits = {"scratch": None, **{n: resolve(p, workdir) for n, p in args.checkpoint}}
    runs = []
    for seed in args.seeds:
        parts = random_split(len(dataset), seed=seed)
        train, valid, test = (dataset[p] for p in parts)
        for mode in args.modes:
            for init, path in inits.items():
                seed_everything(seed)
                if path is None:
                    encoder = MoleBlend.from_preset("small", activation_dropout=0.0, drop_path=0.0)
                else:
                    encoder = load_encoder(path, activation_dropout=0.0, drop_path=0.0)
                predictor = MoleBlendPredictor(encoder, 1, "regression", mode)
                config = FinetuneConfig(
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    lr=args.lr,
                    seed=seed,
                    progress=args.progress,
                )
                result = finetune(predictor, train, valid, test, config)
                runs.append(
                    dict(
                        seed=seed,
                        mode=mode,
                        init=init,
                        valid_mae=result.valid["mae"],
                        test_mae=result.test["mae"],
                        test_rmse=result.test["rmse"],
                        best_epoch=result.best_epoch,
                        seconds=result.seconds,
                    )
                )
                print(
                    f"  seed {seed} {mode:6s} {init:10s}: valid MAE {result.valid['mae']:.4f} "
                    f"test MAE {result.test['mae']:.4f} eV ({result.seconds:.0f} s)",
                    flush=True,
                )
    return {
        "target": args.target,
        "unit": QM9.target_units[column],
        "molecules": len(dataset),
        "qm9_indices": [int(indices.min()), int(indices.max())],
        "sizes": [len(p) for p in random_split(len(dataset), seed=0)],
        "checkpoints": dict(args.checkpoint),
        "epochs": args.epochs,
        "runs": runs,
    }


# ----------------------------------------------------------------------- ship


def run_ship(args: argparse.Namespace) -> dict[str, Any]:
    """Weights, configuration and provenance only: the optimizer state would triple the
    file and is useless to a user."""
    payload = load_checkpoint(args.source, kind="pretrain")
    keep = ("kind", "encoder_config", "encoder_state", "step", "config", "data", "world_size")
    shipped = {key: payload[key] for key in keep if key in payload}
    shipped["source_version"] = payload.get("version")
    save_checkpoint(args.out, shipped)
    size = Path(args.out).stat().st_size
    if size > 25 * 2**20:
        raise SystemExit(f"{args.out} is {size / 2**20:.1f} MB, above the 25 MB budget")
    load_encoder(args.out)  # round trip
    print(f"wrote {args.out} ({size / 2**20:.1f} MB, step {payload['step']})")
    return {}


# ----------------------------------------------------------------------- report


def _glob(results: Path, pattern: str) -> list[Path]:
    """Files matching a pattern with one optional ``{a,b}`` alternation, sorted."""
    head, brace, rest = pattern.partition("{")
    if not brace:
        return sorted(results.glob(pattern))
    options, _, tail = rest.partition("}")
    return sorted({p for o in options.split(",") for p in results.glob(head + o + tail)})


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / name
    return json.loads(path.read_text()) if path.exists() else None


def _plot_bars(
    path: Path, title: str, groups: list[str], series: dict[str, list[tuple]], ylabel: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 1.8 * len(groups)), 3.2))
    width = 0.8 / max(len(series), 1)
    for k, (label, values) in enumerate(series.items()):
        means = [v[0] for v in values]
        stds = [v[1] for v in values]
        xs = np.arange(len(groups)) + (k - (len(series) - 1) / 2) * width
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=label)
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_panels(
    path: Path, title: str, groups: list[str], series: dict[str, list[tuple]], ylabels: list[str]
) -> None:
    """One panel per group (dataset), each on its own scale, a bar per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(2.6 * len(groups) + 1, 3.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = list(series)
    for g, ax in enumerate(axes[0]):
        means = np.array([series[label][g][0] for label in labels])
        stds = np.array([series[label][g][1] for label in labels])
        ax.bar(range(len(labels)), means, yerr=stds, capsize=3, color=colors[: len(labels)])
        finite = np.isfinite(means)
        if finite.any():
            low = np.min(means[finite] - stds[finite])
            high = np.max(means[finite] + stds[finite])
            pad = 0.15 * (high - low) + 1e-6
            ax.set_ylim(low - pad, high + pad)
        ax.set_xticks([])
        ax.set_title(groups[g].replace("\n", " "), fontsize=9)
        ax.set_ylabel(ylabels[g], fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[k]) for k in range(len(labels))]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _stats(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, 0.0
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def merge_moleculenet(datas: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``moleculenet.py`` result from several runs of it with the same protocol
    (epochs, batch size, learning rates, splits): scratch + GIN in one run and a checkpoint
    in another, one dataset per process, or one seed per process (``--seeds 1``), so that a
    large dataset can be spread over processes and sessions. A (dataset, model, seed) given
    twice is an error, not a silent overwrite."""
    merged = json.loads(json.dumps(datas[0]))
    for other in datas[1:]:
        for key in ("epochs", "batch_size", "lr", "gin_lr"):
            if other["args"].get(key) != merged["args"].get(key):
                raise SystemExit(f"cannot merge runs with different {key}")
        for name, entry in other["results"].items():
            if name not in merged["results"]:
                merged["results"][name] = entry
                continue
            if entry["sizes"] != merged["results"][name]["sizes"]:
                raise SystemExit(f"{name}: the runs used different splits")
            runs = merged["results"][name]["runs"]
            for model, model_runs in entry["runs"].items():
                seen = {r["seed"] for r in runs.get(model, [])}
                twice = sorted(seen & {r["seed"] for r in model_runs})
                if twice:
                    raise SystemExit(f"{name}: {model} seed(s) {twice} are in two result files")
                runs[model] = sorted([*runs.get(model, []), *model_runs], key=lambda r: r["seed"])
        merged["seconds"] += other["seconds"]
    merged["args"]["seeds"] = sorted(
        {
            r["seed"]
            for entry in merged["results"].values()
            for model_runs in entry["runs"].values()
            for r in model_runs
        }
    )
    merged["device"] = ", ".join(sorted({d.get("device", "cpu") for d in datas}))
    return merged


def report_moleculenet(
    data: dict[str, Any], plots: Path, stem: str, models: list[str] | None = None
) -> list[str]:
    lines = []
    results = data["results"]
    available = list(dict.fromkeys(m for entry in results.values() for m in entry["runs"]))
    models = [m for m in models or available if m in available]
    labels = {"moleblend": "MoleBLEND scratch", "gin": "GIN"}
    headers = ["dataset", "metric", "train/valid/test"]
    headers += [labels.get(m, f"MoleBLEND {m}") for m in models]
    rows, groups = [], []
    series: dict[str, list[tuple]] = {labels.get(m, f"MoleBLEND {m}"): [] for m in models}
    for name, entry in results.items():
        arrow = "↑" if entry["metric"] == "roc_auc" else "↓"
        row = [
            name,
            f"test {entry['metric']} {arrow}",
            "/".join(str(v) for v in entry["sizes"].values()),
        ]
        for m in models:
            tests = [r["test"] for r in entry["runs"].get(m, [])]
            cell = mean_std(tests, 3) if tests else "not run"
            if tests and len(tests) != len(data["args"]["seeds"]):
                cell += f" ({len(tests)} seed{'s' if len(tests) > 1 else ''})"
            row.append(cell)
            series[labels.get(m, f"MoleBLEND {m}")].append(_stats(tests))
        rows.append(row)
        groups.append(f"{name}\n({entry['metric']})")
    seeds = len(data["args"]["seeds"])
    lines.append(markdown_table(headers, rows, align="lll" + "r" * len(models)).rstrip())
    args = data["args"]
    lines.append(
        f"\n{seeds} seeds (mean ± sample std), {args['epochs']} epochs, batch "
        f"{args['batch_size']}, MoleBLEND lr {args['lr']}"
        f"{', GIN lr ' + str(args['gin_lr']) if 'gin' in models else ''}; "
        f"{data['seconds'] / 60:.0f} min of training in all, "
        + (
            "one CPU core per process."
            if data.get("device", "cpu") == "cpu"
            else f"devices: {data['device']}."
        )
    )
    ylabels = [f"test {entry['metric']}" for entry in results.values()]
    _plot_panels(plots / f"{stem}.png", "Test metric (scaffold split)", groups, series, ylabels)
    lines.append(f"\n![{stem}](plots/{stem}.png)")
    return lines


def report_lowdata(data: dict[str, Any], plots: Path) -> list[str]:
    lines = []
    for name, entry in data["results"].items():
        feats = list(dict.fromkeys(r["features"] for r in entry["runs"]))
        sizes = sorted({r["size"] for r in entry["runs"]})
        rows = []
        series: dict[str, list[tuple]] = {f: [] for f in feats}
        for size in sizes:
            row = [str(size)]
            for f in feats:
                scores = [
                    r["score"] for r in entry["runs"] if r["features"] == f and r["size"] == size
                ]
                row.append(mean_std(scores, 3))
                series[f].append(_stats(scores))
            rows.append(row)
        arrow = "↑" if entry["metric"] == "roc_auc" else "↓"
        lines.append(
            f"\n**{name}** (test {entry['metric']} {arrow}, test set "
            f"{entry['test']} molecules, training pool {entry['train_pool']})\n"
        )
        lines.append(
            markdown_table(["train molecules", *feats], rows, align="l" + "r" * len(feats)).rstrip()
        )
        _plot_bars(
            plots / f"lowdata_{name}.png",
            f"{name}: linear probe, test {entry['metric']}",
            [str(s) for s in sizes],
            series,
            entry["metric"],
        )
        lines.append(f"\n![lowdata {name}](plots/lowdata_{name}.png)")
    return lines


def report_qm9(data: dict[str, Any], plots: Path) -> list[str]:
    modes = list(dict.fromkeys(r["mode"] for r in data["runs"]))
    inits = list(dict.fromkeys(r["init"] for r in data["runs"]))
    rows = []
    series: dict[str, list[tuple]] = {i: [] for i in inits}
    for mode in modes:
        row = [mode]
        for init in inits:
            maes = [r["test_mae"] for r in data["runs"] if r["mode"] == mode and r["init"] == init]
            row.append(mean_std(maes, 4))
            series[init].append(_stats(maes))
        rows.append(row)
    seeds = len({r["seed"] for r in data["runs"]})
    lines = [
        markdown_table(
            ["mode", *[f"{i} test MAE ({data['unit']})" for i in inits]],
            rows,
            align="l" + "r" * len(inits),
        ).rstrip()
    ]
    lines.append(
        f"\n{data['molecules']} molecules (QM9 indices {data['qm9_indices'][0]}-"
        f"{data['qm9_indices'][1]}), random split {'/'.join(map(str, data['sizes']))}, "
        f"{seeds} seeds, {data['epochs']} epochs."
    )
    _plot_bars(
        plots / "qm9_gap.png",
        f"QM9 {data['target']}: test MAE ({data['unit']})",
        modes,
        series,
        f"MAE ({data['unit']})",
    )
    lines.append("\n![qm9](plots/qm9_gap.png)")
    return lines


#: ogbg-molhiv leaderboard entries placed beside ours (test ROC-AUC %, mean and std of 10
#: seeds, from the OGB leaderboard page).
MOLHIV_LEADERBOARD = (
    ("GIN-virtual (OGB leaderboard, from scratch, 10 seeds)", 77.07, 1.49),
    ("Graphormer (OGB leaderboard, pretrained on PCQM4M)", 80.51, 0.53),
)


def merge_molhiv(results: Path, stem: str) -> dict[str, Any] | None:
    """``STEM.json`` with the runs of ``STEM_seed<N>.json`` (seeds run as separate
    processes, `benchmarks/ogbg_molhiv.py --seeds N`) added; a file of other settings, or
    with a seed already present, is left out and named."""
    data = _load(results, f"{stem}.json")
    if data is None:
        return None
    runs, seeds = list(data["runs"]), {r["seed"] for r in data["runs"]}
    extra = sorted(
        results.glob(f"{stem}_seed*.json"), key=lambda p: int(p.stem.rsplit("seed", 1)[1])
    )
    for path in extra:
        other = json.loads(path.read_text())
        new = [r for r in other["runs"] if r["seed"] not in seeds]
        if other["settings"] != data["settings"] or len(new) != len(other["runs"]):
            print(f"left out {path}: other settings, or a seed already counted")
            continue
        runs += new
        seeds |= {r["seed"] for r in new}
    return {**data, "runs": runs}


def report_molhiv(runs: dict[str, dict[str, Any]]) -> list[str]:
    """The ogbg-molhiv table: one row per ``benchmarks/ogbg_molhiv.py`` JSON file (label ->
    its contents), then the leaderboard entries."""

    def percent(values: list[float]) -> str:
        mean, std = _stats([100 * v for v in values])
        return f"{mean:.2f} ± {std:.2f}" if len(values) > 1 else f"{mean:.2f}"

    rows = []
    for label, data in runs.items():
        done = sorted(data["runs"], key=lambda r: r["seed"])
        rows.append(
            [
                f"{label}, {data['settings']['epochs']} epochs",
                percent([r["test_rocauc"] for r in done]),
                percent([r["valid_rocauc"] for r in done]),
                str(len(done)),
                ", ".join(
                    f"{100 * r['test_rocauc']:.2f} (seed {r['seed']}, epoch {r['best_epoch']})"
                    for r in done
                ),
            ]
        )
    rows += [
        [name, f"{mean:.2f} ± {std:.2f}", "", "10", ""] for name, mean, std in MOLHIV_LEADERBOARD
    ]
    header = [
        "model",
        "test ROC-AUC (%)",
        "valid ROC-AUC (%)",
        "seeds",
        "per seed (test, selected epoch)",
    ]
    return markdown_table(header, rows, align="lrrrl").splitlines()


def plot_pretraining(log: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log.read_text().splitlines()]
    if not records:
        return
    steps = np.array([r["step"] for r in records])
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    window = max(1, len(records) // 100)

    def smooth(key: str) -> np.ndarray:
        values = np.array([np.nan if r.get(key) is None else r[key] for r in records], float)
        kernel = np.ones(window) / window  # trailing mean: no edge effects
        return np.convolve(np.nan_to_num(values), kernel, mode="valid")

    steps = steps[window - 1 :]
    for key in ("spd", "edge", "3d", "denoise"):
        axes[0].plot(steps, smooth(key), label=key)
    axes[0].set_title("pretraining losses", fontsize=10)
    axes[0].set_xlabel("step")
    axes[0].legend(fontsize=7)
    for key in ("spd_acc", "edge_acc"):
        axes[1].plot(steps, smooth(key), label=key)
    axes[1].set_title("pair-head accuracy (all pairs)", fontsize=10)
    axes[1].set_xlabel("step")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def report_pretraining(log: Path) -> list[str]:
    """The 4,000-step checkpoint's provenance (the weights sections 1-9 of RESULTS.md measure,
    shipped as ``pretrained`` before the 5M-visit run's pick replaced them) and the losses at
    the start and the end of its run (means over the first and last 5% of the logged steps)."""
    payload = load_checkpoint(FOUR_K_WEIGHTS, kind="pretrain")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    span = max(1, len(records) // 20)
    keys = ("loss", "spd", "edge", "3d", "denoise", "spd_acc", "edge_acc")

    def mean(rows: list[dict[str, Any]], key: str) -> str:
        values = [r[key] for r in rows if r.get(key) is not None]
        return f"{np.mean(values):.3f}" if values else "n/a"

    rows = [
        ["first steps", *[mean(records[:span], k) for k in keys]],
        ["last steps", *[mean(records[-span:], k) for k in keys]],
    ]
    config, data = payload["config"], payload["data"]
    sources = ", ".join(f"{n:,} {name}" for name, n in data["sources"].items())
    return [
        f"Checkpoint `benchmarks/weights/{FOUR_K_WEIGHTS.name}` (shipped as `pretrained` "
        f"until the 70k-step pick of section 10b): step {payload['step']} of "
        f"{config['steps']}, batch "
        f"{config['batch_size']}, lr {config['lr']} (warm-up {config['warmup_steps']}, cosine), "
        f"mode `{config['mode']}`, blend ratio "
        f"{':'.join(f'{r:g}' for r in payload['encoder_config']['blend']['ratio'])}, "
        f"{data['molecules']:,} molecules ({sources}), pyg-molblend {payload['version']}.\n",
        markdown_table(["", *keys], rows),
        "\n![pretraining](plots/pretraining.png)",
    ]


def run_report(args: argparse.Namespace) -> dict[str, Any]:
    results = Path(args.results)
    plots = results.parent / "plots"
    plots.mkdir(exist_ok=True)
    sections: dict[str, list[str]] = {}
    # each section: the moleculenet.py JSON files merged into its table
    for stem, pattern, models in (
        ("moleculenet_pretrained", "moleculenet_{scratch_gin,pretrained}*.json", COMPARISON),
        ("moleculenet_ablation", "moleculenet_ablation_*.json", ABLATION),
        ("moleculenet_ablation4k", "moleculenet_ablation4k_*.json", ABLATION),
        ("moleculenet_ratio", "moleculenet_ablation_*.json", RATIO_SWEEP),
    ):
        datas = []
        for path in _glob(results, pattern):
            data = json.loads(path.read_text())
            if data.get("finished", True):  # files written before the flag existed are whole
                datas.append(data)
            else:
                print(f"left out {path}: its run has not finished")
        if datas:
            sections[stem] = report_moleculenet(merge_moleculenet(datas), plots, stem, models)
    data = _load(results, "lowdata.json")
    if data is not None:
        sections["lowdata"] = report_lowdata(data, plots)
    data = _load(results, "qm9_gap.json")
    if data is not None:
        sections["qm9"] = report_qm9(data, plots)
    molhiv = {
        label: data
        for label, stem in (
            ("MoleBLEND `small`, shipped weights (70k steps)", "ogbg_molhiv_pretrained"),
            ("MoleBLEND `small`, from scratch", "ogbg_molhiv_scratch"),
        )
        if (data := merge_molhiv(results, stem)) is not None and data["runs"]
    }
    if molhiv:
        sections["molhiv"] = report_molhiv(molhiv)
    log = results / "pretrain_blend_log.jsonl"
    if log.exists():
        plot_pretraining(log, plots / "pretraining.png")
        sections["pretraining"] = report_pretraining(log)
    for key, lines in sections.items():
        out = results / f"{key}.md"
        out.write_text("\n".join(lines) + "\n")
        print(f"wrote {out}")
    document = Path(args.document)
    if document.exists():
        text = document.read_text()
        for key, lines in sections.items():
            text = fill_section(text, key, "\n".join(lines))
        document.write_text(text)
        print(f"updated the generated sections of {document}")
    return {}


def fill_section(text: str, key: str, body: str) -> str:
    """Replaces what stands between ``<!-- begin KEY -->`` and ``<!-- end KEY -->``."""
    begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
    if begin not in text or end not in text:
        return text
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


# ----------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("lowdata", "qm9"):
        p = sub.add_parser(name)
        p.add_argument(
            "--checkpoint",
            action="append",
            type=parse_checkpoint,
            default=[],
            metavar="NAME=PATH",
            help="'pretrained', 'random' or a path; repeatable",
        )
        p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
        p.add_argument("--json", default=None, help=f"output (default: {RESULTS}/<name>.json)")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--progress", action="store_true")
    low = sub.choices["lowdata"]
    low.add_argument("--datasets", nargs="+", default=list(LOWDATA_DATASETS))
    low.add_argument("--sizes", nargs="+", type=int, default=list(LOWDATA_SIZES))
    low.add_argument("--raw-dir", default=DEFAULT_RAW_DIR)
    low.add_argument("--root", default="runs/molnet")
    low.add_argument("--max-atoms", type=int, default=DEFAULT_MAX_ATOMS)
    qm9 = sub.choices["qm9"]
    qm9.add_argument("--root", required=True, help="QM9 root with the held-out qm9pack part(s)")
    qm9.add_argument("--target", default="gap")
    qm9.add_argument("--modes", nargs="+", default=["3d", "2d", "2d+3d"])
    qm9.add_argument("--epochs", type=int, default=30)
    qm9.add_argument("--batch-size", type=int, default=64)
    qm9.add_argument("--lr", type=float, default=3e-4)
    ship = sub.add_parser("ship")
    ship.add_argument("source", help="checkpoint.pt of `pyg-molblend pretrain`")
    ship.add_argument("--out", default=str(PRETRAINED_PATH))
    rep = sub.add_parser("report")
    rep.add_argument("--results", default=str(RESULTS))
    rep.add_argument(
        "--document",
        default=str(REPO / "benchmarks" / "RESULTS.md"),
        help="Markdown file whose '<!-- begin KEY -->...<!-- end KEY -->' sections are rewritten",
    )
    args = parser.parse_args()

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    runner = {"lowdata": run_lowdata, "qm9": run_qm9, "ship": run_ship, "report": run_report}
    payload = runner[args.command](args)
    if args.command in ("lowdata", "qm9"):
        payload = {
            "args": {k: v for k, v in vars(args).items()},
            "environment": environment(),
            "version": __version__,
            "seconds": time.perf_counter() - start,
            **payload,
        }
        out = Path(
            args.json or RESULTS / f"{'qm9_gap' if args.command == 'qm9' else 'lowdata'}.json"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=2, default=str))
        print(f"wrote {out} ({payload['seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
