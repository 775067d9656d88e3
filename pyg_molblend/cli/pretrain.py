"""``pretrain``: MoleBLEND pretraining from SMILES files, resumable, DDP under torchrun."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch_geometric.transforms as T

from pyg_molblend.datasets import SmilesDataset
from pyg_molblend.models import MoleBlend
from pyg_molblend.nn import ModalityBlend
from pyg_molblend.training.finetune import seed_everything
from pyg_molblend.training.pretrain import PretrainConfig, pretrain
from pyg_molblend.transforms import AddConformer, AddShortestPath

__all__ = ["run_pretrain"]


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
        out = Path(args.out)
        root = args.root or str(out / "data")
        steps: list[Any] = [AddShortestPath()]
        if not args.no_conformers:
            steps.append(AddConformer(seed=0))
        # Rank 0 prepares the cache; the others wait and then read it.
        if rank == 0:
            dataset = _dataset(args, root, T.Compose(steps))
        if distributed:
            dist.barrier()
        if rank != 0:
            dataset = _dataset(args, root, T.Compose(steps))
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
        )
        extra = {
            "data": {
                "smiles": [str(p) for p in args.smiles],
                "molecules": len(dataset),
                "conformers": not args.no_conformers,
                "mode": args.mode,
            }
        }
        if rank == 0:
            has_pos = dataset._data.has_pos if "has_pos" in dataset._data else None
            missing = 0 if has_pos is None else int((~has_pos).sum())
            world = dist.get_world_size() if distributed else 1
            print(
                f"pretraining on {len(dataset)} molecules ({missing} without conformer), "
                f"{args.steps} steps, preset {args.preset}, {world} process(es)"
            )
        summary = pretrain(model, dataset, out, config, resume=args.resume, extra=extra)
        if rank == 0:
            print(
                f"done: {summary['steps']} steps in {summary['seconds']:.0f} s; "
                f"checkpoint {out / 'checkpoint.pt'}"
            )
        return summary
    finally:
        if distributed:
            dist.destroy_process_group()


def _dataset(args: argparse.Namespace, root: str, pre: T.Compose) -> SmilesDataset:
    return SmilesDataset(
        root,
        args.smiles,
        pre_transform=pre,
        skip_invalid=args.skip_invalid,
        max_molecules=args.max_molecules,
        num_workers=args.num_workers,
    )
