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

from pyg_molblend.datasets import QM9, SDFDataset, SmilesDataset, merge_datasets
from pyg_molblend.models import MoleBlend
from pyg_molblend.nn import ModalityBlend
from pyg_molblend.training.io import check_writable
from pyg_molblend.training.pretrain import PretrainConfig, check_output, pretrain
from pyg_molblend.training.utils import seed_everything
from pyg_molblend.transforms import AddConformer, AddShortestPath

__all__ = ["PRETRAIN_KEYS", "run_pretrain"]

#: Fields every pretraining molecule keeps when several sources are merged.
PRETRAIN_KEYS = ("x", "edge_index", "edge_attr", "smiles", "pos", "has_pos", "spd", "path_edge")


def run_pretrain(args: argparse.Namespace) -> dict[str, Any]:
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
        model = MoleBlend.from_preset(args.preset, blend=ModalityBlend(ratio=args.blend_ratio))
        config = PretrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_steps=args.warmup_steps,
            save_every=args.save_every,
            seed=args.seed,
            mode=args.mode,
            device=device,
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
            has_pos = dataset._data.has_pos if "has_pos" in dataset._data else None
            missing = 0 if has_pos is None else int((~has_pos).sum())
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
    steps: list[Any] = [AddShortestPath()]
    if not args.no_conformers:
        steps.append(AddConformer(seed=0))  # leaves molecules that have 3D alone
    parts: dict[str, InMemoryDataset] = {}
    for name, files, cls in (("smiles", args.smiles, SmilesDataset), ("sdf", args.sdf, SDFDataset)):
        if files:
            parts[name] = cls(
                str(root),
                files,
                pre_transform=T.Compose(steps),
                force_reload=args.force_reload,
                skip_invalid=args.skip_invalid,
                max_molecules=args.max_molecules,
                max_atoms=args.max_atoms,
                num_workers=args.num_workers,
            )
    if args.qm9 is not None:
        parts["qm9"] = _qm9(args)
    sources = {name: len(part) for name, part in parts.items()}
    if len(parts) == 1:
        return next(iter(parts.values())), sources
    return merge_datasets(list(parts.values()), PRETRAIN_KEYS), sources


def _qm9(args: argparse.Namespace) -> QM9:
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
        pre_transform=AddShortestPath(),
        force_reload=args.force_reload,
        max_molecules=args.qm9_max_molecules,
        num_workers=args.num_workers,
    )
