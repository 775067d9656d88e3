"""``pyg-molblend hpopt``: hyperparameter search for fine-tuning with Optuna, on the
validation metric only."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import torch

from pyg_molblend.cli.common import (
    add_data_arguments,
    add_device_argument,
    attach_descriptors,
    load_labelled,
    make_split,
    positive_int,
    write_split,
)
from pyg_molblend.cli.finetune import add_control_arguments, add_model_arguments, train_member
from pyg_molblend.training.io import atomic_write, check_writable, write_json
from pyg_molblend.training.metrics import check_metric, higher_is_better, primary_metric
from pyg_molblend.training.utils import seed_everything

__all__ = ["SEARCH_SPACE", "add_arguments", "run"]

#: What is searched, by ``finetune`` option: learning rate (log-uniform), epochs (steps
#: of 5 up to ``--max-epochs``), head dropout, batch size, weight decay and, from a
#: pretrained checkpoint, freezing (none, frozen encoder, or staged unfreezing after a
#: quarter of the epochs).
SEARCH_SPACE = {
    "lr": (1e-5, 1e-3),
    "dropout": (0.0, 0.3),
    "batch_size": (16, 32, 64),
    "weight_decay": (0.0, 1e-5, 1e-4, 1e-3, 1e-2),
    "freezing": ("none", "freeze", "staged"),
}


def add_arguments(subparsers: Any) -> None:
    hp = subparsers.add_parser(
        "hpopt",
        help="search fine-tuning hyperparameters with Optuna on the validation metric",
    )
    add_data_arguments(hp)
    add_model_arguments(hp)
    add_control_arguments(hp)
    hp.add_argument("--trials", type=positive_int, default=20, help="trials in all (default: 20)")
    hp.add_argument(
        "--max-epochs",
        type=positive_int,
        default=30,
        help="largest number of epochs tried (default: 30)",
    )
    hp.add_argument("--seed", type=int, default=0, help="seed of the split, sampler and runs")
    hp.add_argument(
        "--storage",
        help="Optuna storage URL (default: sqlite:///<out>/study.db); a search killed or "
        "run again with more --trials continues from it",
    )
    hp.add_argument("--study-name", default="pyg-molblend", help="Optuna study name")
    add_device_argument(hp, training=True)
    hp.add_argument("--out", default="runs/hpopt", help="output directory")


def _suggest(trial: Any, args: argparse.Namespace) -> dict[str, Any]:
    """A trial's ``finetune`` options."""
    low, high = SEARCH_SPACE["lr"]
    epochs = trial.suggest_int("epochs", min(5, args.max_epochs), args.max_epochs, step=5)
    params: dict[str, Any] = {
        "lr": trial.suggest_float("lr", low, high, log=True),
        "epochs": epochs,
        "dropout": trial.suggest_float("dropout", *SEARCH_SPACE["dropout"]),
        "batch_size": trial.suggest_categorical("batch_size", SEARCH_SPACE["batch_size"]),
        "weight_decay": trial.suggest_categorical("weight_decay", SEARCH_SPACE["weight_decay"]),
        "freeze_encoder": False,
        "unfreeze_after": None,
    }
    if args.checkpoint:  # freezing a randomly initialised encoder makes no sense
        freezing = trial.suggest_categorical("freezing", SEARCH_SPACE["freezing"])
        if freezing == "freeze":
            params["freeze_encoder"] = True
        elif freezing == "staged" and epochs > 1:
            params["unfreeze_after"] = max(1, math.ceil(epochs / 4))
    return params


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Search; write best_config.json (for ``finetune --config``), trials.csv and
    split.csv. The test part of the split is never given to a model."""
    try:
        import optuna
    except ImportError:
        raise ValueError(
            "hpopt needs Optuna, an optional extra: pip install 'pyg_molblend[hpopt]'"
        ) from None
    if args.from_scratch:
        args.checkpoint = None
    out = check_writable(args.out)
    seed_everything(args.seed)
    dataset, name = load_labelled(args, args.mode)
    metric = check_metric(dataset.task_type, args.metric or primary_metric(dataset.task_type))
    attach_descriptors(dataset, args.descriptors)
    split = make_split(dataset, args.split, args.seed, args.split_file, args.split_sizes)
    if len(split["train"]) == 0 or len(split["valid"]) == 0:
        raise ValueError(
            f"{name} ({len(dataset)} molecules) is too small for the search's split: "
            f"{len(split['train'])} train and {len(split['valid'])} valid molecules; each "
            "needs at least one (more data, or --split-sizes)"
        )
    write_split(out / "split.csv", dataset, split)
    # Only these reach a model: the search must not see the test molecules.
    subsets = {
        part: dataset[torch.as_tensor(split[part], dtype=torch.long)] for part in ("train", "valid")
    }

    def objective(trial: Any) -> float:
        params = _suggest(trial, args)
        trial_args = argparse.Namespace(**{**vars(args), **params})
        seed_everything(args.seed)
        _, result = train_member(trial_args, dataset, subsets, args.seed, progress=False)
        trial.set_user_attr("params", params)
        trial.set_user_attr("best_epoch", result.best_epoch)
        score = result.valid[metric]
        if math.isnan(score):
            raise optuna.TrialPruned(f"validation {metric} is undefined")
        return score

    direction = "maximize" if higher_is_better(metric) else "minimize"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=args.study_name,
        storage=args.storage or f"sqlite:///{out / 'study.db'}",
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=args.seed),
        load_if_exists=True,
    )
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(states=finished))
    remaining = max(0, args.trials - done)
    if done:
        print(f"{name}: {done} trials already in the study; running {remaining} more")
    study.optimize(objective, n_trials=remaining, show_progress_bar=True)

    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise ValueError(f"{name}: no trial gave a defined validation metric")
    best = study.best_trial
    # The searched values and the fixed options that shaped the search, as finetune
    # options: `finetune --config best_config.json` with the same data repeats the trial.
    fixed = {
        "mode": args.mode,
        "checkpoint": args.checkpoint,
        "from_scratch": args.checkpoint is None,
        "preset": args.preset,
        "class_weights": args.class_weights,
        "patience": args.patience,
        "metric": args.metric,
        "descriptors": args.descriptors,
        "split": args.split,
        "split_sizes": args.split_sizes,
        "split_file": args.split_file,
        "seed": args.seed,
    }
    config = {
        k: v
        for k, v in {**fixed, **best.user_attrs["params"]}.items()
        if v is not None and v is not False
    }
    write_json(out / "best_config.json", config)
    with atomic_write(out / "trials.csv", newline="") as f:
        study.trials_dataframe().to_csv(f, index=False)
    summary = {
        "dataset": name,
        "metric": metric,
        "direction": direction,
        "best_valid": best.value,
        "best_trial": best.number,
        "best_config": config,
        "trials": len(study.trials),
        "num_train": len(split["train"]),
        "num_valid": len(split["valid"]),
    }
    write_json(out / "hpopt.json", summary)
    print(
        f"{name}: best valid {metric} = {best.value:.4f} (trial {best.number} of "
        f"{len(study.trials)}): {json.dumps(config)}; wrote {out}/best_config.json "
        "(use: pyg-molblend finetune --config best_config.json ...)"
    )
    return summary
