"""ogbg-molhiv with the OGB protocol: MoleBLEND (``small``, 2D) fine-tuned from scratch or
from pretrained weights (``--checkpoint``).

The OGB protocol: the official scaffold split (``dataset.get_idx_split()``), the epoch
selected on the validation ROC-AUC only, the selected model scored once on test, both
with OGB's ``Evaluator`` (:func:`pyg_molblend.datasets.evaluate_ogb`), mean ± std over
seeds. The leaderboard asks for all training molecules and 10 seeds; ``--full`` runs
that (100 epochs, as the OGB GIN examples, unless ``--epochs``/``--seeds`` say
otherwise), which takes days on a CPU. The default run is a quick check, labelled as
**not** the leaderboard protocol: 4,000 training molecules drawn once (``--max-train``,
``--subsample-seed``), the full valid and test sets, 1 epoch, 1 seed.

A seed on all training molecules takes hours on a CPU, so a run can span sessions: with
``--state-dir`` each seed's fine-tuning writes its training state there (at most once a
minute) and continues from it when the command is run again, to the uninterrupted result;
with ``--json`` the file is written after every seed and the seeds already in it (same
settings, else exit 2) are not run again.

Usage::

    python benchmarks/ogbg_molhiv.py [--root DIR] [--max-train 4000] [--epochs 1]
                                     [--seeds 0] [--full] [--checkpoint WEIGHTS]
                                     [--state-dir DIR] [--json OUT] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

if "--progress" not in sys.argv:  # before tqdm is imported: no dataset-processing bars
    os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import torch
from _common import environment, table
from moleculenet import (
    fmt_seconds,
    mean_std,
    single_thread,
    time_batches,
)

from pyg_molblend.datasets import evaluate_ogb, load_ogb
from pyg_molblend.models import MoleBlend, MoleBlendPredictor
from pyg_molblend.training.checkpoint import load_encoder
from pyg_molblend.training.finetune import FinetuneConfig, finetune, predict
from pyg_molblend.training.io import write_json
from pyg_molblend.training.utils import seed_everything, setting_differences
from pyg_molblend.transforms import AddShortestPath

NAME = "ogbg-molhiv"
SHARED = Path("/work/shared/data/ogb/ogbg_molhiv")
LEADERBOARD_SEEDS = 10
FULL_EPOCHS = 100


def copy_dataset(source: Path, root: Path) -> None:
    """Copies the offline dataset directory to ``<root>/ogbg_molhiv``, writable (the
    source is read-only, and OGB writes ``processed/`` next to ``raw/``)."""
    target = root / "ogbg_molhiv"
    shutil.copytree(source, target, copy_function=shutil.copyfile)
    for directory, _, _ in os.walk(target):
        os.chmod(directory, 0o755)


def prepare(root_arg: str | None) -> tuple[Path, tempfile.TemporaryDirectory | None, str]:
    """The dataset root, the temporary directory to clean up, and a note on the source."""
    if root_arg is None:
        tmp = tempfile.TemporaryDirectory(prefix="ogbg_molhiv_bench_")
        root = Path(tmp.name)
        if SHARED.exists():
            copy_dataset(SHARED, root)
            return root, tmp, f"copied {SHARED} to {root / 'ogbg_molhiv'}"
        return root, tmp, f"no {SHARED}: OGB downloads the dataset to {root}"
    root = Path(root_arg)
    existing = [root / "ogbg_molhiv", root / "ogbg_molhiv_pyg"]
    if not any(p.exists() for p in existing) and SHARED.exists():
        root.mkdir(parents=True, exist_ok=True)
        copy_dataset(SHARED, root)
        return root, None, f"copied {SHARED} to {root / 'ogbg_molhiv'}"
    return root, None, f"dataset under {root}"


def earlier_runs(path: str | None, settings: dict) -> list[dict]:
    """The runs recorded in ``--json`` by an earlier invocation with the same settings
    (none without the file); exits with status 2 if its settings differ."""
    if not path or not Path(path).exists():
        return []
    recorded = json.loads(Path(path).read_text())
    stored = recorded.get("settings", {})
    differences = setting_differences(stored, settings, keys=settings)
    if differences:
        print(
            f"--json {path} holds runs of other settings: {'; '.join(differences)}; "
            "pass another --json",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return recorded.get("runs", [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root",
        default=None,
        help=f"dataset root (default: a temporary copy of {SHARED}); a root without "
        "ogbg_molhiv/ gets a copy of it",
    )
    parser.add_argument("--full", action="store_true", help="the leaderboard settings")
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=None, help="default 0 (--full: 0..9)"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help=f"default 1 (--full: {FULL_EPOCHS})"
    )
    parser.add_argument(
        "--max-train",
        type=int,
        default=None,
        help="training molecules drawn from the official train split, 0 = all "
        "(default 4000; --full: all)",
    )
    parser.add_argument("--subsample-seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--preset", default="small", help="model size from scratch")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="pretrained weights to fine-tune from: a path or 'pretrained' (default: none, "
        "from scratch at --preset)",
    )
    parser.add_argument(
        "--state-dir",
        default=None,
        help="keep each seed's training state here and continue from it when run again",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1; 0 = torch's default)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="write the results to this file")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument("--dry-run", action="store_true", help="print the estimate and stop")
    args = parser.parse_args()
    seeds = args.seeds or (list(range(LEADERBOARD_SEEDS)) if args.full else [0])
    epochs = args.epochs or (FULL_EPOCHS if args.full else 1)
    max_train = args.max_train if args.max_train is not None else (0 if args.full else 4000)

    settings = dict(
        epochs=epochs,
        max_train=max_train,
        subsample_seed=args.subsample_seed,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        preset=None if args.checkpoint else args.preset,
        checkpoint=args.checkpoint,
    )
    previous = earlier_runs(args.json, settings)

    def make_encoder() -> MoleBlend:
        if args.checkpoint:
            return load_encoder(args.checkpoint, activation_dropout=0.0, drop_path=0.0)
        return MoleBlend.from_preset(args.preset, activation_dropout=0.0, drop_path=0.0)

    model_name = (
        f"MoleBLEND 2d from {args.checkpoint}"
        if args.checkpoint
        else f"MoleBLEND {args.preset} 2d from scratch"
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    print(environment() + f", {torch.get_num_threads()} torch threads")
    root, tmp, note = prepare(args.root)
    print(f"data: {note}")

    # ---- dataset (AddShortestPath once, as a pre_transform) and official split
    start = time.perf_counter()
    with warnings.catch_warnings(), single_thread():
        warnings.filterwarnings("ignore", message="The `pre_transform` argument differs")
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        dataset = load_ogb(NAME, str(root), pre_transform=AddShortestPath())
    first = dataset[0]
    print(
        f"loaded {len(dataset)} graphs in {time.perf_counter() - start:.1f} s; y of a graph: "
        f"{first.y.dtype} {list(first.y.shape)}; pair fields precomputed: "
        f"{'spd' in first and 'path_edge' in first}"
    )
    if not first.y.is_floating_point() or list(first.y.shape) != [1, 1]:
        print(f"FAIL: expected float y of shape [1, 1], got {first.y.dtype} {list(first.y.shape)}")
        return 1
    if "spd" not in first:
        print(
            "note: this cache was processed without AddShortestPath (by plain OGB?): pairs "
            "are computed per batch instead (same values, slower); delete its processed/ "
            "folder to precompute them"
        )
    split = dataset.get_idx_split()
    full_train = split["train"]
    if 0 < max_train < len(full_train):
        rng = np.random.default_rng(args.subsample_seed)
        train_idx = torch.from_numpy(
            np.sort(rng.choice(full_train.numpy(), size=max_train, replace=False))
        )
    else:
        train_idx = full_train
    subsets = {
        "train": dataset[train_idx],
        "valid": dataset[split["valid"]],
        "test": dataset[split["test"]],
    }
    sizes = {k: len(v) for k, v in subsets.items()}
    positives = {k: int(torch.nansum(v._data.y[v.indices()]).item()) for k, v in subsets.items()}

    reasons = []
    if len(train_idx) < len(full_train):
        reasons.append(
            f"trained on {len(train_idx)} of the {len(full_train)} training molecules (--max-train)"
        )
    if len(seeds) < LEADERBOARD_SEEDS:
        reasons.append(f"{len(seeds)} seed(s), the leaderboard asks for {LEADERBOARD_SEEDS}")
    leaderboard = not reasons
    protocol = (
        "OGB leaderboard protocol"
        if leaderboard
        else "NOT the OGB leaderboard protocol: " + "; ".join(reasons)
    )
    print(
        f"official scaffold split train/valid/test {len(full_train)}/{sizes['valid']}/"
        f"{sizes['test']}; used {sizes['train']}/{sizes['valid']}/{sizes['test']} "
        f"(positives {positives['train']}/{positives['valid']}/{positives['test']})"
    )
    print(
        f"protocol: {protocol}.\n  {model_name}, {epochs} epoch(s), "
        f"batch {args.batch_size}, lr {args.lr} (warm-up + cosine), seeds {seeds}; epoch "
        f"selected on valid ROC-AUC, test scored once, OGB Evaluator"
    )

    # ---- time estimate from a few timed steps of a throwaway model
    seed_everything(1000)
    probe = MoleBlendPredictor(make_encoder(), 1)
    train_cost, eval_cost = time_batches(
        probe, subsets["train"], subsets["valid"], args.batch_size, args.device
    )
    del probe
    bs = args.batch_size
    valid_pass = eval_cost.pass_seconds(subsets["valid"], bs, False)
    test_pass = eval_cost.pass_seconds(subsets["test"], bs, False)
    final = 2 * valid_pass + test_pass
    epoch_s = train_cost.pass_seconds(subsets["train"], bs, True)
    full_epoch_s = train_cost.pass_seconds(dataset[full_train], bs, True)
    epoch_s, full_epoch_s = epoch_s + valid_pass, full_epoch_s + valid_pass
    total = len(seeds) * (epochs * epoch_s + final)
    print(
        f"\nestimate (6 training steps and 6 forward passes on batches the run forms, from "
        f"small to large, fitted as a fixed cost per batch plus a cost per padded atom pair):\n"
        f"  one epoch on {sizes['train']} molecules + the validation pass: "
        f"{fmt_seconds(epoch_s)} (on all {len(full_train)}: {fmt_seconds(full_epoch_s)});\n"
        f"  this run: {fmt_seconds(total)} ({len(seeds)} seed(s) x {epochs} epoch(s) + "
        f"final evaluations); --full ({LEADERBOARD_SEEDS} seeds x {FULL_EPOCHS} epochs on "
        f"all): {LEADERBOARD_SEEDS * (FULL_EPOCHS * full_epoch_s + final) / 3600:.0f} h"
    )
    if args.dry_run:
        return 0

    def payload(runs: list[dict], finished: bool) -> dict:
        valid = [r["valid_rocauc"] for r in runs]
        test = [r["test_rocauc"] for r in runs]
        return dict(
            args=vars(args),
            settings=settings,
            finished=finished,
            seeds=sorted({r["seed"] for r in runs} | set(seeds)),
            epochs=epochs,
            max_train=max_train,
            protocol=protocol,
            leaderboard_protocol=leaderboard,
            environment=environment(),
            torch_threads=torch.get_num_threads(),
            sizes=sizes,
            positives=positives,
            runs=sorted(runs, key=lambda r: r["seed"]),
            valid_rocauc_mean=float(np.mean(valid)) if valid else None,
            test_rocauc_mean=float(np.mean(test)) if test else None,
            valid_rocauc_std=float(np.std(valid, ddof=1)) if len(valid) > 1 else None,
            test_rocauc_std=float(np.std(test, ddof=1)) if len(test) > 1 else None,
        )

    # ---- runs
    runs = list(previous)  # every seed of the file stays in it, and in the report
    checks_ok = all(r["package_metric_agrees"] for r in runs)
    y_valid = subsets["valid"]._data.y[subsets["valid"].indices()].numpy()
    y_test = subsets["test"]._data.y[subsets["test"].indices()].numpy()
    run_start = time.perf_counter()
    for seed in seeds:
        if any(r["seed"] == seed for r in runs):
            print(f"  seed {seed}: in {args.json} already", flush=True)
            continue
        seed_everything(seed)
        predictor = MoleBlendPredictor(make_encoder(), 1, "classification", mode="2d")
        config = FinetuneConfig(
            epochs=epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            seed=seed,
            device=args.device,
            progress=args.progress,
            state_path=str(Path(args.state_dir) / f"seed_{seed}.pt") if args.state_dir else None,
            resume=bool(args.state_dir),
        )
        result = finetune(predictor, subsets["train"], subsets["valid"], subsets["test"], config)
        # OGB's Evaluator on the selected model's predictions (scores in [0, 1]; ROC-AUC
        # only needs their order).
        valid_pred = predict(predictor, subsets["valid"], args.batch_size, args.device)
        assert result.test_predictions is not None
        valid_auc = evaluate_ogb(NAME, y_valid, valid_pred)
        test_auc = evaluate_ogb(NAME, y_test, result.test_predictions)
        agree = math.isclose(valid_auc, result.valid["roc_auc"], abs_tol=1e-9) and math.isclose(
            test_auc, result.test["roc_auc"], abs_tol=1e-9
        )
        checks_ok &= agree
        run = dict(
            seed=seed,
            valid_rocauc=valid_auc,
            test_rocauc=test_auc,
            best_epoch=result.best_epoch,
            seconds=result.seconds,
            seconds_per_epoch=result.seconds / result.epochs_run,
            package_metric_agrees=agree,
            history=result.history,
        )
        runs.append(run)
        if args.json:  # after every seed: a session may end in the middle of the next
            write_json(args.json, payload(runs, finished=False))
        print(
            f"  seed {seed}: valid ROC-AUC {valid_auc:.4f}, test ROC-AUC {test_auc:.4f}, "
            f"selected epoch {result.best_epoch}/{epochs}, {run['seconds_per_epoch']:.1f} s "
            f"per epoch (finetune total {result.seconds:.0f} s); package metric "
            f"{'agrees' if agree else 'DIFFERS'} "
            f"({result.valid['roc_auc']:.6f}/{result.test['roc_auc']:.6f})",
            flush=True,
        )
    elapsed = time.perf_counter() - run_start

    # ---- report
    spread = f"mean ± sample std over {len(runs)} seeds" if len(runs) > 1 else "one seed"
    print()
    print(
        table(
            [
                "model",
                "train mols",
                "epochs",
                "seeds",
                "valid ROC-AUC",
                "test ROC-AUC",
                "selected epoch(s)",
                "s/epoch",
            ],
            [
                [
                    model_name,
                    sizes["train"],
                    epochs,
                    len(runs),
                    mean_std([r["valid_rocauc"] for r in runs]),
                    mean_std([r["test_rocauc"] for r in runs]),
                    ",".join(str(r["best_epoch"]) for r in runs),
                    f"{np.mean([r['seconds_per_epoch'] for r in runs]):.1f}",
                ]
            ],
            title=f"ogbg-molhiv, OGB Evaluator ({spread}); {protocol}",
        )
    )
    print(
        "s/epoch = wall seconds of finetune() per epoch (training, the validation pass and "
        "the final valid/test evaluation)."
    )
    print(f"runs took {fmt_seconds(elapsed)} (estimated {fmt_seconds(total)})")
    print(
        f"check (OGB Evaluator == the package's roc_auc on the same predictions): "
        f"{'ok' if checks_ok else 'FAILED'}"
    )

    if args.json:
        write_json(args.json, payload(runs, finished=True))
        print(f"wrote {args.json}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if checks_ok else 1


if __name__ == "__main__":
    sys.exit(main())
