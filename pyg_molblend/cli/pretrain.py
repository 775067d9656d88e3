"""``pretrain``: MoleBLEND pretraining from SMILES files, SDF files and QM9, resumable, DDP
under torchrun."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch_geometric.transforms as T
from torch_geometric.data import Dataset, InMemoryDataset

from pyg_molblend.cli.common import add_device_argument, positive_int
from pyg_molblend.constants import DEFAULT_MAX_ATOMS
from pyg_molblend.datasets import (
    QM9,
    OnDiskMoleculeDataset,
    SDFDataset,
    SmilesDataset,
    merge_datasets,
)
from pyg_molblend.datasets.utils import num_without_pos
from pyg_molblend.models import EDGE_TARGETS, PRESETS, MoleBlend
from pyg_molblend.nn import ModalityBlend
from pyg_molblend.training.io import check_writable
from pyg_molblend.training.pretrain import PretrainConfig, check_output, pretrain
from pyg_molblend.training.utils import seed_everything
from pyg_molblend.transforms import AddConformer, AddShortestPath

__all__ = ["PRETRAIN_KEYS", "add_arguments", "run"]

#: Fields every pretraining molecule keeps when several sources are merged.
PRETRAIN_KEYS = ("x", "edge_index", "edge_attr", "smiles", "pos", "has_pos", "spd", "path_edge")


def _ratio(text: str) -> tuple[float, float, float]:
    parts = [p for p in text.replace(":", ",").split(",") if p.strip()]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"blend ratio must be three numbers, got {text!r}"
        ) from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"blend ratio must be three numbers, got {text!r}")
    return values  # type: ignore[return-value]


def add_arguments(subparsers: Any) -> None:
    pt = subparsers.add_parser("pretrain", help="MoleBLEND pretraining on unlabelled SMILES")
    pt.add_argument(
        "--smiles",
        nargs="+",
        default=[],
        help="SMILES files: CSV/TSV with a 'smiles' column, or .smi (optionally .gz, .bz2 "
        "or .xz); molecules get RDKit conformers",
    )
    pt.add_argument(
        "--sdf",
        nargs="+",
        default=[],
        help="SDF files (optionally .gz, .bz2 or .xz) whose records carry 3D coordinates "
        "(DFT geometries such as PCQM4Mv2's); records without 3D get RDKit conformers",
    )
    pt.add_argument(
        "--qm9",
        metavar="ROOT",
        help="a QM9 root whose raw/ holds qm9pack tables (qm9_*.csv[.gz]) or gdb9.sdf: "
        "molecules with their DFT geometries",
    )
    pt.add_argument(
        "--qm9-max-molecules",
        type=int,
        default=None,
        help="use only the first QM9 molecules (in QM9 index order)",
    )
    pt.add_argument("--root", default=None, help="cache of processed molecules (default: OUT/data)")
    pt.add_argument("--preset", default="small", choices=sorted(PRESETS))
    pt.add_argument("--steps", type=int, default=1000)
    pt.add_argument("--batch-size", type=int, default=64)
    pt.add_argument("--lr", type=float, default=2e-4)
    pt.add_argument("--warmup-steps", type=int, default=100)
    pt.add_argument("--save-every", type=int, default=100)
    pt.add_argument(
        "--keep-every",
        type=positive_int,
        default=None,
        metavar="N",
        help="also keep the weights every N steps in OUT/snapshots/step_<step>.pt (no "
        "optimizer state; 2.8 MB for small), to pick a checkpoint by validation results",
    )
    pt.add_argument(
        "--blend-ratio",
        type=_ratio,
        default=(2.0, 2.0, 6.0),
        help="SPD:edge:3D ratio, e.g. 2:2:6 (default)",
    )
    pt.add_argument(
        "--mode",
        default="blend",
        choices=("blend", "2d", "3d", "2d+3d"),
        help="pretraining relations (default: blend; others for ablations)",
    )
    pt.add_argument(
        "--edge-target",
        default="factored",
        choices=EDGE_TARGETS,
        help="how the edge head scores each path bond: its (type, conjugated) class and its "
        "stereo label as two softmaxes (factored, default) or one softmax over the 60 "
        "(type, stereo, conjugated) combinations "
        "(joint: how runs before this option pretrained; --resume them with it)",
    )
    pt.add_argument(
        "--no-conformers", action="store_true", help="skip RDKit conformers (2D-only pretraining)"
    )
    pt.add_argument(
        "--max-molecules",
        type=int,
        default=None,
        help="use only the first molecules of the --smiles files, and of the --sdf files",
    )
    pt.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip invalid and too-large molecules (counted) instead of failing",
    )
    pt.add_argument(
        "--max-atoms",
        type=int,
        default=DEFAULT_MAX_ATOMS,
        help=f"largest molecule accepted, in heavy atoms (default: {DEFAULT_MAX_ATOMS})",
    )
    pt.add_argument(
        "--force-reload", action="store_true", help="rebuild the processed corpus cache"
    )
    pt.add_argument(
        "--in-memory",
        action="store_true",
        help="hold the corpus in memory with its pair relations precomputed (small corpora) "
        "instead of streaming it from an on-disk store whose pair relations are computed "
        "per batch (the default; a killed preparation continues where it stopped)",
    )
    pt.add_argument(
        "--shard-size",
        type=positive_int,
        default=4096,
        help="molecules per shard of the on-disk store (default: 4096)",
    )
    pt.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="processes for conformer generation and for loading batches (default: 0)",
    )
    pt.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.pt (same settings and data; starts fresh if absent)",
    )
    pt.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an OUT that holds a checkpoint, replacing it and its log",
    )
    pt.add_argument("--seed", type=int, default=0)
    add_device_argument(pt, training=True)
    pt.add_argument("--out", default="runs/pretrain")


def run(args: argparse.Namespace) -> dict[str, Any]:
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = args.device
    if distributed:
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
    rank = dist.get_rank() if distributed else 0
    seed_everything(args.seed)  # before the model exists: its init must be reproducible
    try:
        out = check_writable(args.out)
        check_output(out, args.resume, args.overwrite)  # before the corpus is prepared
        # Rank 0 prepares the caches; the others wait and then read them.
        if rank == 0:
            dataset, sources = _corpus(args, out)
        if distributed:
            dist.barrier()
        if rank != 0:
            dataset, sources = _corpus(args, out)
        model = MoleBlend.from_preset(
            args.preset,
            blend=ModalityBlend(ratio=args.blend_ratio),
            edge_target=args.edge_target,
        )
        config = PretrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_steps=args.warmup_steps,
            save_every=args.save_every,
            keep_every=args.keep_every,
            seed=args.seed,
            mode=args.mode,
            device=device,
            precision=args.precision,
            compile=args.compile,
            num_workers=args.num_workers,
        )
        extra = {
            "data": {
                "smiles": [str(p) for p in args.smiles],
                "sdf": [str(p) for p in args.sdf],
                "qm9": None if args.qm9 is None else str(args.qm9),
                "molecules": len(dataset),
                "sources": sources,
                "conformers": not args.no_conformers,
                "mode": args.mode,
            }
        }
        if rank == 0:
            missing = num_without_pos(dataset)
            world = dist.get_world_size() if distributed else 1
            counts = ", ".join(f"{n} {name}" for name, n in sources.items())
            print(
                f"pretraining on {len(dataset)} molecules ({counts}; {missing} without 3D), "
                f"{args.steps} steps, preset {args.preset}, {world} process(es)"
            )
        summary = pretrain(
            model, dataset, out, config, resume=args.resume, extra=extra, overwrite=args.overwrite
        )
        if rank == 0:
            print(
                f"done: {summary['steps']} steps in {summary['seconds']:.0f} s; "
                f"checkpoint {out / 'checkpoint.pt'}"
            )
        return summary
    finally:
        if distributed:
            dist.destroy_process_group()


def _corpus(args: argparse.Namespace, out: Path) -> tuple[Dataset, dict[str, int]]:
    """The pretraining molecules, and their count per source: SMILES files (RDKit
    conformers unless ``--no-conformers``), SDF files (their records' coordinates) and
    QM9 (its DFT geometries)."""
    if not args.smiles and not args.sdf and args.qm9 is None:
        raise ValueError(
            "pretrain needs molecules: --smiles FILE [FILE ...], --sdf FILE [FILE ...] "
            "and/or --qm9 ROOT"
        )
    if (args.qm9 is not None or args.sdf) and args.no_conformers:
        raise ValueError(
            "--no-conformers drops 3D, but --qm9 and --sdf molecules carry coordinates; "
            "for 2D-only pretraining on the same molecules use --mode 2d"
        )
    root = Path(args.root or out / "data")
    # The options both routes give their datasets.
    common: dict[str, Any] = dict(
        force_reload=args.force_reload,
        skip_invalid=args.skip_invalid,
        max_molecules=args.max_molecules,
        max_atoms=args.max_atoms,
        num_workers=args.num_workers,
    )
    conformers = [] if args.no_conformers else [AddConformer(seed=0)]  # keeps real 3D as is
    if not args.in_memory:
        return _on_disk(args, root, conformers, common)
    pre_transform = T.Compose([AddShortestPath(), *conformers])
    parts: dict[str, InMemoryDataset] = {}
    for name, files, cls in (("smiles", args.smiles, SmilesDataset), ("sdf", args.sdf, SDFDataset)):
        if files:
            parts[name] = cls(str(root), files, pre_transform=pre_transform, **common)
    if args.qm9 is not None:
        parts["qm9"] = _qm9(args)
    sources = {name: len(part) for name, part in parts.items()}
    if len(parts) == 1:
        return next(iter(parts.values())), sources
    return merge_datasets(list(parts.values()), PRETRAIN_KEYS), sources


def _on_disk(
    args: argparse.Namespace, root: Path, conformers: list[Any], common: dict[str, Any]
) -> tuple[Dataset, dict[str, int]]:
    """The corpus as one on-disk store: SMILES files, SDF files, then QM9, in that order
    (as the in-memory route merges them), pair relations computed per batch."""
    dataset = OnDiskMoleculeDataset(
        str(root),
        smiles=args.smiles,
        sdf=args.sdf,
        graphs=None if args.qm9 is None else _qm9(args, pair_relations=False),
        graphs_name="qm9",
        pre_transform=conformers[0] if conformers else None,
        shard_size=args.shard_size,
        **common,
    )
    return dataset, dataset.source_counts


def _qm9(args: argparse.Namespace, pair_relations: bool = True) -> QM9:
    raw = Path(args.qm9) / "raw"
    if (raw / "gdb9.sdf").is_file():
        source = "sdf"
    elif sorted(raw.glob("qm9_*.csv*")):
        source = "qm9pack"
    else:
        raise ValueError(
            f"--qm9 {args.qm9!r}: {str(raw)!r} holds neither qm9pack tables (qm9_*.csv[.gz]) "
            "nor gdb9.sdf"
        )
    return QM9(
        args.qm9,
        source=source,
        pre_transform=AddShortestPath() if pair_relations else None,
        force_reload=args.force_reload,
        max_molecules=args.qm9_max_molecules,
        num_workers=args.num_workers,
    )
