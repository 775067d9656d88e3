"""Fine-tuning on MoleculeNet: MoleBLEND (``small``, 2D) from scratch, and from pretrained
weights given with ``--checkpoint``, against a GIN baseline.

For every dataset, both models are trained in the same run on the same scaffold split,
for the same number of epochs and with the same batch size, by the same loop
(:func:`pyg_molblend.training.finetune`): the same masked losses (``masked_bce_loss``, or
``masked_mse_loss`` on targets standardised with the training mean and std), the same
optimiser (AdamW, weight decay 0 by default, i.e. Adam), warm-up + cosine schedule and
gradient clipping, the epoch selected on the validation metric only, and the selected
model evaluated once on test.

The baseline is the GIN of Hu et al. (2020) / the OGB examples, written with PyG's
``GINEConv``: OGB ``AtomEncoder``, one ``BondEncoder`` per layer, 5 layers of width 300,
MLP ``Linear(300, 600) BN ReLU Linear(600, 300)``, BN + ReLU + dropout 0.5 between
layers, mean pooling, a linear head. Learning rates are fixed in advance, one per model
(MoleBLEND: 3e-4, the ``pyg-molblend finetune`` default; GIN: 1e-3, Hu et al. and OGB);
nothing is tuned, and the test metric never feeds back into any choice.

Usage::

    python benchmarks/moleculenet.py [--datasets bbbp esol ...] [--seeds 0 1 2]
                                     [--epochs N] [--json results.json] [--dry-run]
                                     [--checkpoint pretrained]
                                     [--checkpoint 2d=runs/p2d/checkpoint.pt]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys

if "--progress" not in sys.argv:  # before tqdm is imported: no dataset-processing bars
    os.environ.setdefault("TQDM_DISABLE", "1")
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torch_geometric.transforms as T
from _common import environment, synchronize, table
from torch import Tensor, nn
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GINEConv, global_mean_pool

from pyg_molblend.constants import DEFAULT_MAX_ATOMS
from pyg_molblend.data import DenseMolBatch, SizeBucketBatchSampler, scaffold_split
from pyg_molblend.datasets import MoleculeNet
from pyg_molblend.models import MoleBlend, MoleBlendPredictor
from pyg_molblend.training.checkpoint import load_encoder
from pyg_molblend.training.finetune import FinetuneConfig, finetune, train_step
from pyg_molblend.training.metrics import higher_is_better, primary_metric
from pyg_molblend.training.utils import FiniteGuard, dense_batch, make_optimizer, seed_everything
from pyg_molblend.transforms import AddShortestPath

DEFAULT_DATASETS = ("bbbp", "esol", "freesolv", "sider", "tox21")
DEFAULT_RAW_DIR = "/work/shared/data/moleculenet"
MODELS = ("moleblend", "gin")
LABELS = {"moleblend": "MoleBLEND", "gin": "GIN"}


# --------------------------------------------------------------------------- GIN baseline


class _BatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` that uses its running statistics for a single-row training batch
    (a last batch made of one one-atom molecule, methane in FreeSolv, say), where the
    stock module raises."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.size(0) == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class GINE(nn.Module):
    """GIN with bond features (Hu et al. 2020; ``ogb/examples/graphproppred/mol``,
    ``gnn_type="gin"``, no virtual node), last-layer node states mean-pooled. It reads the
    sparse graph that a :class:`~pyg_molblend.data.DenseMolBatch` carries (what
    :func:`finetune` passes) or a PyG batch."""

    #: Path bonds :func:`finetune` densifies for it: none (it reads no pair tensor).
    max_hops = 0

    def __init__(
        self, out_channels: int, num_layers: int = 5, hidden: int = 300, dropout: float = 0.5
    ) -> None:
        from ogb.graphproppred.mol_encoder import AtomEncoder, BondEncoder

        super().__init__()
        self.dropout = dropout
        self.atom_encoder = AtomEncoder(hidden)
        self.bond_encoders = nn.ModuleList(BondEncoder(hidden) for _ in range(num_layers))
        self.convs = nn.ModuleList(
            GINEConv(
                nn.Sequential(
                    nn.Linear(hidden, 2 * hidden),
                    _BatchNorm(2 * hidden),
                    nn.ReLU(),
                    nn.Linear(2 * hidden, hidden),
                ),
                train_eps=True,
            )
            for _ in range(num_layers)
        )
        self.norms = nn.ModuleList(_BatchNorm(hidden) for _ in range(num_layers))
        self.head = nn.Linear(hidden, out_channels)

    def forward(self, batch: Any) -> Tensor:
        if isinstance(batch, DenseMolBatch):
            x, num_graphs = batch.x[batch.mask], batch.batch_size
        else:
            x, num_graphs = batch.x, batch.num_graphs
        h = self.atom_encoder(x)
        last = len(self.convs) - 1
        for i, (conv, norm, bond) in enumerate(
            zip(self.convs, self.norms, self.bond_encoders, strict=True)
        ):
            h = norm(conv(h, batch.edge_index, bond(batch.edge_attr)))
            if i < last:
                h = F.relu(h)
            h = F.dropout(h, self.dropout, self.training)
        return self.head(global_mean_pool(h, batch.batch, num_graphs))


class GINPredictor(nn.Module):
    """The GIN baseline behind the interface :func:`finetune` uses. ``fit_targets``,
    ``loss`` and ``predict`` are *the very methods* of :class:`MoleBlendPredictor`, so the
    losses (``masked_bce_loss`` / ``masked_mse_loss`` in standard units), the regression
    standardisation and the predictions are the same code for both models. Binary and
    regression tasks, no class weights and no descriptors: what this benchmark runs."""

    fit_targets = MoleBlendPredictor.fit_targets
    loss = MoleBlendPredictor.loss
    predict = MoleBlendPredictor.predict
    num_descriptors = 0

    def __init__(self, num_tasks: int, task_type: str, dropout: float = 0.5) -> None:
        super().__init__()
        if task_type not in ("classification", "regression"):
            raise ValueError(f"the GIN baseline does binary or regression tasks, not {task_type!r}")
        self.num_tasks = num_tasks
        self.num_outputs = num_tasks
        self.task_type = task_type
        self.encoder = GINE(num_tasks, dropout=dropout)
        self.register_buffer("target_mean", torch.zeros(num_tasks))
        self.register_buffer("target_std", torch.ones(num_tasks))
        self.register_buffer("pos_weight", None)  # unweighted, as MoleBlendPredictor's default

    def forward(self, batch: Any) -> Tensor:
        return self.encoder(batch)


# --------------------------------------------------------------------------- helpers


def build_model(name: str, num_tasks: int, task_type: str, args: argparse.Namespace) -> nn.Module:
    if name == "gin":
        return GINPredictor(num_tasks, task_type, dropout=args.gin_dropout)
    if name == "moleblend":
        encoder = MoleBlend.from_preset(args.preset, activation_dropout=0.0, drop_path=0.0)
    else:  # a pretrained encoder, exactly as `pyg-molblend finetune --checkpoint` loads it
        encoder = load_encoder(args.checkpoints[name], activation_dropout=0.0, drop_path=0.0)
    return MoleBlendPredictor(encoder, num_tasks, task_type, mode="2d")


def model_lr(name: str, args: argparse.Namespace) -> float:
    return args.gin_lr if name == "gin" else args.lr


def parse_checkpoint(text: str) -> tuple[str, str]:
    """``NAME=PATH``, or a bare ``PATH`` (or ``pretrained``) named after its stem."""
    name, sep, path = text.partition("=")
    if not sep:
        name, path = Path(text).stem, text
    if name in MODELS:
        raise argparse.ArgumentTypeError(f"checkpoint name {name!r} is taken by a model")
    return name, path


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def graph_sizes(dataset: Any) -> np.ndarray:
    """Atoms per graph of an in-memory dataset or subset, in its order."""
    sizes = torch.as_tensor(dataset.slices["x"]).diff().numpy()
    return sizes[np.asarray(dataset.indices(), dtype=np.int64)]


def batch_work(pairs: bool, sizes: np.ndarray) -> float:
    """What a batch costs, up to a constant and a fixed cost per batch: MoleBLEND
    (``pairs``) pads every molecule to the batch's largest (plus the graph token), so its
    time follows the padded atom pairs ``B (N_max + 1)^2``; GIN's follows the atoms."""
    if pairs:
        return float(len(sizes) * (int(sizes.max()) + 1) ** 2)
    return float(sizes.sum())


def pass_batches(
    pairs: bool, dataset: Any, batch_size: int, shuffle: bool
) -> tuple[list[list[int]], np.ndarray]:
    """The batches :func:`finetune` forms in one pass over :obj:`dataset`, and the
    :func:`batch_work` of each: its training epochs and its evaluation passes both take
    molecules of similar size together (:class:`~pyg_molblend.data.SizeBucketBatchSampler`;
    shuffled in training, the first epoch's draw)."""
    sizes = graph_sizes(dataset)
    batches = list(SizeBucketBatchSampler(dataset, batch_size, shuffle=shuffle, seed=0))
    return batches, np.array([batch_work(pairs, sizes[np.asarray(b)]) for b in batches])


@dataclass
class StepCost:
    """Seconds of a batch as ``fixed + per_work * work`` (least squares over timed batches):
    the fixed part is what every step costs whatever its size (small operations, the
    optimizer), which dominates the many small batches of a set of small molecules."""

    pairs: bool  # the work of a batch: padded atom pairs (MoleBLEND) or atoms (GIN)
    fixed: float
    per_work: float

    @classmethod
    def fit(cls, pairs: bool, works: list[float], seconds: list[float]) -> StepCost:
        works_arr, seconds_arr = np.asarray(works), np.asarray(seconds)
        if len(works_arr) > 1 and np.ptp(works_arr) > 0:
            per_work, fixed = np.polyfit(works_arr, seconds_arr, 1)
            if per_work >= 0 and fixed >= 0:
                return cls(pairs, float(fixed), float(per_work))
        # one size of batch, or a noisy fit: proportional to the work
        return cls(pairs, 0.0, float(seconds_arr.sum() / max(works_arr.sum(), 1.0)))

    def pass_seconds(self, dataset: Any, batch_size: int, shuffle: bool) -> float:
        """Seconds of one pass over :obj:`dataset` in the batches :func:`pass_batches` forms."""
        _, works = pass_batches(self.pairs, dataset, batch_size, shuffle)
        return float(np.sum(self.fixed + self.per_work * works))


def time_batches(
    model: nn.Module,
    train_set: Any,
    valid_set: Any,
    batch_size: int,
    device: str,
    steps: int = 6,
) -> tuple[StepCost, StepCost]:
    """:class:`StepCost` of a training step (loading the batch, then :func:`train_step`:
    densifying, forward, backward, clipping, AdamW) and of a prediction batch, each fitted
    to ``steps`` batches that a run forms (:func:`pass_batches`), picked at evenly spaced
    quantiles of their work, after one warm-up step. ``model`` is a throwaway copy: its
    weights change."""
    pairs = not isinstance(model, GINPredictor)
    max_hops = model.encoder.max_hops
    model.to(device).train()
    optimizer = make_optimizer(model.parameters(), lr=1e-6, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    guard = FiniteGuard(optimizer, device)

    def timed(dataset: Any, shuffle: bool, step: Callable[[Any], object]) -> StepCost:
        batches, works = pass_batches(pairs, dataset, batch_size, shuffle)
        order = np.argsort(works, kind="stable")
        # a median batch to warm up (not kept), then batches from the smallest to the largest
        at = [
            order[len(order) // 2],
            *order[np.linspace(0, len(order) - 1, steps).round().astype(int)],
        ]
        loader = iter(DataLoader(dataset, batch_sampler=[batches[i] for i in at]))
        seconds = []
        for _ in at:
            start = time.perf_counter()
            step(next(loader))
            synchronize(device)
            seconds.append(time.perf_counter() - start)
        return StepCost.fit(pairs, list(works[at][1:]), seconds[1:])

    train_cost = timed(
        train_set,
        True,
        lambda batch: train_step(
            model, batch, optimizer, scheduler, guard, 5.0, device, "nothing (a timing probe)"
        ),
    )
    model.eval()
    eval_cost = timed(
        valid_set, False, lambda batch: model.predict(dense_batch(batch, device, max_hops))
    )
    return train_cost, eval_cost


def estimate_epoch_seconds(
    model: nn.Module,
    train_set: Any,
    valid_set: Any,
    batch_size: int,
    device: str,
) -> float:
    """Seconds of one :func:`finetune` epoch (training + validation pass), from the step
    costs of :func:`time_batches` summed over the batches the epoch forms."""
    train_cost, eval_cost = time_batches(model, train_set, valid_set, batch_size, device)
    return train_cost.pass_seconds(train_set, batch_size, True) + eval_cost.pass_seconds(
        valid_set, batch_size, False
    )


def mean_std(values: list[float], digits: int = 4) -> str:
    """``mean ± sample std`` (just the mean for a single value)."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "nan"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def describe_device(device: str) -> str:
    """``cpu``, or the accelerator's name (``cuda:0 (NVIDIA H100 80GB HBM3)``)."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def fmt_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


class single_thread:
    """Runs its block with one torch thread. Pre-transforms apply small per-molecule
    kernels, which are up to 25x slower with 2 threads while another process keeps the
    2 cores busy (thread oversubscription)."""

    def __enter__(self) -> None:
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.threads)


def scaffold_positions(dataset: MoleculeNet) -> dict[str, np.ndarray]:
    """The scaffold split of the dataset, as ``pyg-molblend finetune`` makes it
    (``cli.common.make_split``)."""
    parts = scaffold_split(dataset.smiles)
    return {
        name: part.numpy() for name, part in zip(("train", "valid", "test"), parts, strict=True)
    }


def prepare_dataset(
    name: str,
    root: Path,
    raw_dir: Path,
    num_workers: int = 0,
    max_atoms: int = DEFAULT_MAX_ATOMS,
) -> MoleculeNet:
    """The dataset, its raw CSV copied from ``raw_dir`` when missing (offline), processed
    (once, then cached under ``root``) on ``num_workers`` processes; invalid SMILES and
    molecules above :obj:`max_atoms` skipped (counted in ``.skipped``, ``.too_large``)."""
    raw_file = MoleculeNet.names[name][2] + ".csv"
    target = root / name / "raw" / raw_file
    if not target.exists():
        source = raw_dir / raw_file
        if not source.exists():
            raise SystemExit(
                f"{source} does not exist and {target} is missing: cannot load {name} offline"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)  # copyfile: not the read-only mode of the source
    with warnings.catch_warnings(), single_thread():
        warnings.filterwarnings("ignore", message="The `pre_transform` argument differs")
        warnings.filterwarnings("ignore", message="Skipped")
        return MoleculeNet(
            str(root),
            name,
            pre_transform=T.Compose([AddShortestPath()]),
            skip_invalid=True,
            max_atoms=max_atoms,
            num_workers=num_workers,
        )


def write_json(
    args: argparse.Namespace,
    device_name: str,
    seconds: float,
    results: dict[str, Any],
    finished: bool,
) -> None:
    """All results so far; ``finished`` is False while models or datasets are still to run
    (``pretraining.py report`` leaves such files out)."""
    payload = dict(
        args=vars(args),
        environment=environment(),
        device=device_name,
        torch_threads=torch.get_num_threads(),
        seconds=seconds,
        finished=finished,
        results=results,
    )
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    tmp.replace(path)


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    parser.add_argument("--raw-dir", default=DEFAULT_RAW_DIR, help="offline MoleculeNet CSVs")
    parser.add_argument(
        "--root", default=None, help="dataset cache (default: a temporary directory)"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--lr", type=float, default=3e-4, help="MoleBLEND learning rate")
    parser.add_argument("--gin-lr", type=float, default=1e-3, help="GIN learning rate")
    parser.add_argument("--gin-dropout", type=float, default=0.5)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument(
        "--max-atoms", type=int, default=DEFAULT_MAX_ATOMS, help="larger molecules skipped"
    )
    parser.add_argument(
        "--models",
        nargs="*",
        default=list(MODELS),
        choices=MODELS,
        help="built-in models (none: only the --checkpoint ones)",
    )
    parser.add_argument(
        "--checkpoint",
        action="append",
        type=parse_checkpoint,
        default=[],
        metavar="NAME=PATH",
        help="also fine-tune MoleBLEND from these pretrained weights (a path or 'pretrained'; "
        "repeatable), with the from-scratch settings",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: steadier on a shared 2-core machine; 0 = torch's default)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="processes that pre-transform a dataset the first time it is processed",
    )
    parser.add_argument("--json", default=None, help="write all results to this file")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument("--dry-run", action="store_true", help="print the estimate and stop")
    args = parser.parse_args()

    args.checkpoints = dict(args.checkpoint)
    args.models = [*args.models, *args.checkpoints]
    if not args.models:
        raise SystemExit("nothing to train: give --models and/or --checkpoint")
    for name in args.checkpoints:
        LABELS[name] = f"MoleBLEND {name}"
    if args.threads:
        torch.set_num_threads(args.threads)
    device_name = describe_device(args.device)
    print(environment() + f", {torch.get_num_threads()} torch threads, device {device_name}")
    names = [n.lower() for n in args.datasets]
    unknown = sorted(set(names) - set(MoleculeNet.names))
    if unknown:
        raise SystemExit(f"Unknown datasets {unknown}; choose from {sorted(MoleculeNet.names)}")

    tmp = None
    if args.root is None:
        tmp = tempfile.TemporaryDirectory(prefix="moleculenet_bench_")
        root = Path(tmp.name)
    else:
        root = Path(args.root)
    print(f"data: raw CSVs from {args.raw_dir}, processed under {root}")
    print(
        f"protocol: scaffold split (80/10/10, deterministic: seeds change initialisation and "
        f"shuffling only), {args.epochs} epochs, batch {args.batch_size}, epoch selected on "
        f"valid, test evaluated once; MoleBLEND {args.preset} 2d lr {args.lr}, "
        f"GIN lr {args.gin_lr}; seeds {args.seeds}"
    )

    # ---- data and split
    start = time.perf_counter()
    prepared = {}
    for name in names:
        dataset = prepare_dataset(name, root, Path(args.raw_dir), args.num_workers, args.max_atoms)
        too_large = len(dataset.too_large)
        split = scaffold_positions(dataset)
        subsets = {k: dataset[torch.as_tensor(v, dtype=torch.long)] for k, v in split.items()}
        prepared[name] = dict(
            dataset=dataset,
            subsets=subsets,
            too_large=too_large,
            sizes={k: len(v) for k, v in subsets.items()},
        )
        print(
            f"  {name}: {len(dataset)} molecules ({len(dataset.skipped)} invalid SMILES and "
            f"{too_large} above {args.max_atoms} atoms skipped), {dataset.num_tasks} "
            f"{dataset.task_type} task(s), train/valid/test "
            f"{'/'.join(str(len(v)) for v in subsets.values())}"
        )
    print(f"data ready in {time.perf_counter() - start:.1f} s")

    # ---- time estimate from a few timed steps of throwaway models
    print(
        "\nestimate (per model and dataset, 6 training steps and 6 forward passes on batches "
        "the run forms, from small to large, fitted as a fixed cost per batch plus a cost per "
        "padded atom pair (MoleBLEND) or atom (GIN)):"
    )
    estimate_rows, total = [], 0.0
    for name, item in prepared.items():
        ds, subsets = item["dataset"], item["subsets"]
        row = [name]
        for model_name in args.models:
            seed_everything(1000)
            model = build_model(model_name, ds.num_tasks, ds.task_type, args)
            seconds = estimate_epoch_seconds(
                model, subsets["train"], subsets["valid"], args.batch_size, args.device
            )
            item[f"estimate_{model_name}"] = seconds
            total += seconds * args.epochs * len(args.seeds)
            row.append(f"{seconds:.1f}")
        estimate_rows.append(row)
    print(table(["dataset", *[f"{LABELS[m]} s/epoch" for m in args.models]], estimate_rows))
    print(
        f"estimated training time: {fmt_seconds(total)} for {args.epochs} epochs x "
        f"{len(args.seeds)} seed(s) x {len(args.models)} model(s) x {len(names)} dataset(s) "
        f"(+ final evaluations)"
    )
    if args.dry_run:
        return 0

    # ---- training
    results: dict[str, Any] = {}
    run_start = time.perf_counter()
    for name, item in prepared.items():
        ds, subsets = item["dataset"], item["subsets"]
        metric = primary_metric(ds.task_type)
        entry: dict[str, Any] = dict(
            task=ds.task_type,
            metric=metric,
            num_tasks=ds.num_tasks,
            sizes=item["sizes"],
            skipped_invalid=len(ds.skipped),
            skipped_too_large=item["too_large"],
            runs={},
        )
        for model_name in args.models:
            runs = []
            for seed in args.seeds:
                seed_everything(seed)
                model = build_model(model_name, ds.num_tasks, ds.task_type, args)
                config = FinetuneConfig(
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    lr=model_lr(model_name, args),
                    weight_decay=args.weight_decay,
                    seed=seed,
                    device=args.device,
                    progress=args.progress,
                )
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Validation")
                    result = finetune(
                        model, subsets["train"], subsets["valid"], subsets["test"], config
                    )
                run = dict(
                    seed=seed,
                    valid=result.valid[metric],
                    test=result.test[metric],
                    valid_metrics=result.valid,
                    test_metrics=result.test,
                    best_epoch=result.best_epoch,
                    seconds=result.seconds,
                    seconds_per_epoch=result.seconds / args.epochs,
                    parameters=num_parameters(model),
                    lr=config.lr,
                    history=result.history,
                )
                runs.append(run)
                print(
                    f"  {name:9s} {LABELS[model_name]:9s} seed {seed}: valid {metric} "
                    f"{run['valid']:.4f}, test {metric} {run['test']:.4f}, best epoch "
                    f"{result.best_epoch}/{args.epochs}, {run['seconds_per_epoch']:.1f} s/epoch "
                    f"(estimated {item[f'estimate_{model_name}']:.1f})",
                    flush=True,
                )
            entry["runs"][model_name] = runs
            results[name] = entry
            if args.json:  # what is finished survives an interrupted run
                elapsed = time.perf_counter() - run_start
                write_json(args, device_name, elapsed, results, finished=False)
    elapsed = time.perf_counter() - run_start

    # ---- report
    headers = ["dataset", "task", "metric", "train/valid/test"]
    for m in args.models:
        headers += [f"{LABELS[m]} valid", f"{LABELS[m]} test"]
    headers += [f"{LABELS[m]} s/ep" for m in args.models]
    ratio = {"moleblend", "gin"} <= set(args.models)
    if ratio:
        headers.append("time ratio")
    rows = []
    for name, entry in results.items():
        arrow = "↑" if higher_is_better(entry["metric"]) else "↓"
        row = [
            name,
            "cls" if entry["task"] == "classification" else "reg",
            f"{entry['metric']} {arrow}",
            "/".join(str(v) for v in entry["sizes"].values()),
        ]
        per_epoch = {}
        for m in args.models:
            runs = entry["runs"][m]
            row += [mean_std([r["valid"] for r in runs]), mean_std([r["test"] for r in runs])]
            per_epoch[m] = float(np.mean([r["seconds_per_epoch"] for r in runs]))
        row += [f"{per_epoch[m]:.1f}" for m in args.models]
        if ratio:
            row.append(f"{per_epoch['moleblend'] / per_epoch['gin']:.1f}x")
        rows.append(row)
    seeds_note = (
        f"mean ± sample std over {len(args.seeds)} seeds"
        if len(args.seeds) > 1
        else "a single seed: no spread"
    )
    print()
    print(
        table(
            headers,
            rows,
            title=f"Fine-tuning, scaffold split, {args.epochs} epochs ({seeds_note})",
            align="llll" + "r" * (len(headers) - 4),
        )
    )
    print(
        "s/ep = wall seconds of finetune() per epoch: training, the validation pass and the "
        "final valid/test evaluation; time ratio = MoleBLEND s/ep / GIN s/ep.\n"
        "ROC-AUC: mean over tasks with both classes in the split. Epoch selected on valid; "
        "test evaluated once."
    )
    params = {m: results[names[0]]["runs"][m][0]["parameters"] for m in args.models}
    print(
        "parameters (first dataset): "
        + ", ".join(f"{LABELS[m]} {params[m]:,}" for m in args.models)
    )
    print(f"training took {fmt_seconds(elapsed)} (estimated {fmt_seconds(total)})")

    if args.json:
        write_json(args, device_name, elapsed, results, finished=True)
        print(f"wrote {args.json}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
