"""MoleBLEND pretraining: resumable, single process or DDP (``torchrun``)."""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch_geometric.data import Batch, Dataset
from torch_geometric.loader import DataLoader
from tqdm.auto import tqdm

from pyg_molblend.data import DenseMolBatch, SizeBucketBatchSampler
from pyg_molblend.models import MoleBlend
from pyg_molblend.training.checkpoint import data_fingerprint, load_checkpoint, save_checkpoint
from pyg_molblend.training.io import append_jsonl, atomic_write, json_safe, read_jsonl
from pyg_molblend.training.utils import (
    FiniteGuard,
    dense_batch,
    make_optimizer,
    pin_memory_for,
    warmup_cosine,
)

__all__ = ["CHECKPOINT_NAME", "PretrainConfig", "check_output", "pretrain"]

#: File name of the rolling pretraining checkpoint inside the output directory.
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class PretrainConfig:
    """Pretraining settings (reference: Adam, clip 5, warm-up then cosine decay)."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    clip_norm: float = 5.0
    save_every: int = 100
    seed: int = 0
    mode: str = "blend"
    device: str = "cpu"
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    #: Settings a resumed run must share with its checkpoint (the others, such as
    #: ``save_every`` or ``device``, do not change what is computed).
    RESUME_KEYS = (
        "steps",
        "batch_size",
        "lr",
        "weight_decay",
        "warmup_steps",
        "clip_norm",
        "seed",
        "mode",
    )


class _PretrainStep(nn.Module):
    """Routes :meth:`MoleBlend.pretrain_loss` through ``forward`` so that DDP's gradient
    hooks see it."""

    def __init__(self, model: MoleBlend, mode: str) -> None:
        super().__init__()
        self.model = model
        self.mode = mode

    def forward(
        self, batch: Batch | DenseMolBatch, generator: torch.Generator
    ) -> tuple[Tensor, dict]:
        return self.model.pretrain_loss(batch, mode=self.mode, generator=generator)


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG state as tensors, numbers, strings and lists (what a ``weights_only``
    checkpoint may hold)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "blend": generator.get_state(),
    }


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["blend"])


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def pretrain(
    model: MoleBlend,
    dataset: Dataset,
    out: str | os.PathLike,
    config: PretrainConfig,
    resume: bool = False,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Pretrain :obj:`model` on :obj:`dataset` for ``config.steps`` optimizer steps.

    Every ``config.save_every`` steps and at the end, rank 0 writes
    ``out/checkpoint.pt`` atomically with the model, optimizer, scheduler, position in
    the data and every RNG state (each rank's), so a run killed at any moment and
    restarted with :obj:`resume` continues exactly where the checkpoint was taken.
    Batches hold molecules of similar size
    (:class:`~pyg_molblend.data.SizeBucketBatchSampler`, full batches only) drawn per
    epoch from the seed, so they are the same with or without a restart. Under
    ``torchrun`` (an initialised process group) the model is wrapped in DDP and each rank
    takes its share of every epoch's batches.

    A resumed run must have the checkpoint's model configuration, settings
    (:attr:`PretrainConfig.RESUME_KEYS`), number of processes and data
    (:func:`~pyg_molblend.training.checkpoint.data_fingerprint`); ``log.jsonl`` is cut
    back to the checkpoint's step. Without :obj:`resume`, a folder that already holds a
    checkpoint is refused unless :obj:`overwrite` (which starts afresh). A non-finite
    loss or gradient norm stops the run before the optimizer step, so no checkpoint
    ever holds the diverged weights.

    Returns:
        A summary (steps, seconds, last losses, and the step it resumed from).

    Raises:
        ValueError: on a mismatching or unexpected checkpoint, or a diverged step.
    """
    rank, world = _world()
    device = torch.device(config.device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed + rank)
    random.seed(config.seed + rank)
    np.random.seed(config.seed + rank)
    model.to(device)
    step_module: nn.Module = _PretrainStep(model, config.mode)
    if world > 1:
        step_module = nn.parallel.DistributedDataParallel(
            step_module,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    optimizer = make_optimizer(model.parameters(), config.lr, config.weight_decay)
    guard = FiniteGuard(optimizer, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(min(config.warmup_steps, config.steps), config.steps)
    )
    generator = torch.Generator(device=device).manual_seed(config.seed + 1000 * rank)
    sampler = SizeBucketBatchSampler(
        dataset,
        config.batch_size,
        seed=config.seed,
        drop_last=True,
        num_replicas=world,
        rank=rank,
    )
    batches_per_epoch = len(sampler)
    if batches_per_epoch == 0:
        raise ValueError(
            f"{len(dataset)} molecules over {world} process(es) do not fill one batch of "
            f"{config.batch_size}"
        )

    step, epoch, position = 0, 0, 0
    checkpoint_path = out / CHECKPOINT_NAME
    log_path = out / "log.jsonl"
    fingerprint = data_fingerprint(dataset)
    if resume and checkpoint_path.exists():
        payload = load_checkpoint(checkpoint_path, kind="pretrain")
        _check_resumable(payload, checkpoint_path, model, config, world, fingerprint)
        model.load_state_dict(payload["encoder_state"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        step, epoch, position = payload["step"], payload["epoch"], payload["position"]
        _set_rng_state(payload["rng"][rank], generator)
        if rank == 0:
            _truncate_log(log_path, step)
            print(f"resuming from step {step} of {config.steps} ({checkpoint_path})")
    elif resume:
        if rank == 0:
            print(f"no checkpoint at {checkpoint_path}; starting fresh")
    else:
        check_output(out, resume, overwrite)
    if step == 0 and rank == 0:  # starting afresh: no old checkpoint or log lines remain
        for stale in (checkpoint_path, log_path):
            stale.unlink(missing_ok=True)
    if world > 1:
        dist.barrier()  # rank 0 has removed or cut the old files before anyone writes
    start_step = step

    bar = tqdm(
        total=config.steps, initial=step, desc="pretrain", disable=not config.progress or rank != 0
    )
    start = time.perf_counter()
    last: dict[str, Any] = {}
    model.train()
    try:
        while step < config.steps:
            sampler.set_epoch(epoch)
            loader = DataLoader(
                dataset,
                batch_sampler=list(sampler)[position:],
                num_workers=config.num_workers,
                pin_memory=pin_memory_for(device),
                # Its own generator: iterating a DataLoader draws a base seed from the global
                # RNG otherwise, which would shift dropout after a resume.
                generator=torch.Generator(),
            )
            for batch in loader:
                dense = dense_batch(batch, device, model.max_hops)
                optimizer.zero_grad()
                loss, parts = step_module(dense, generator)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
                guard.check(
                    loss,
                    grad_norm,
                    step + 1,
                    scheduler.get_last_lr()[0],
                    f"the last checkpoint ({checkpoint_path}) is unchanged",
                )
                optimizer.step()
                scheduler.step()
                guard.flush()  # the log line reads the loss anyway
                loss_value, grad_value = loss.item(), grad_norm.item()
                step += 1
                position += 1
                last = {
                    "step": step,
                    "loss": loss_value,
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": grad_value,
                    **{k: (None if v is None else float(v)) for k, v in parts.items()},
                }
                if rank == 0:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last['loss']:.3f}", spd_acc=last.get("spd_acc"))
                    append_jsonl(log_path, last)
                if step % config.save_every == 0 or step == config.steps:
                    _save(
                        checkpoint_path,
                        model,
                        optimizer,
                        scheduler,
                        step,
                        epoch,
                        position,
                        generator,
                        world,
                        config,
                        {**(extra or {}), "data_fingerprint": fingerprint},
                    )
                if step >= config.steps:
                    break
            else:
                epoch, position = epoch + 1, 0
    finally:  # the error message, if any, starts on its own line
        bar.close()
    return {
        "steps": step,
        "resumed_from": start_step,
        "seconds": time.perf_counter() - start,
        "last": json_safe(last),
    }


def check_output(out: str | os.PathLike, resume: bool, overwrite: bool) -> None:
    """Refuse to start afresh in a folder that holds a checkpoint unless told to
    overwrite it (call it before any long preparation)."""
    path = Path(out) / CHECKPOINT_NAME
    if path.exists() and not (resume or overwrite):
        raise ValueError(
            f"{str(out)!r} already holds a pretraining checkpoint: continue it with "
            "resume=True, or replace it and its log with overwrite=True"
        )


def _check_resumable(
    payload: dict[str, Any],
    path: Path,
    model: MoleBlend,
    config: PretrainConfig,
    world: int,
    fingerprint: str,
) -> None:
    """Refuse to continue a checkpoint under other settings, naming each difference."""
    stored = payload.get("config", {})
    differences = [
        f"{key} {stored.get(key)!r} (this run: {getattr(config, key)!r})"
        for key in PretrainConfig.RESUME_KEYS
        if stored.get(key) != getattr(config, key)
    ]
    differences += [
        f"model {key} {value!r} (this run: {model.config.get(key)!r})"
        for key, value in payload["encoder_config"].items()
        if json_safe(model.config.get(key)) != json_safe(value)
    ]
    if payload.get("world_size") != world:
        differences.append(f"processes {payload.get('world_size')} (this run: {world})")
    if payload.get("data_fingerprint") != fingerprint:
        differences.append("the input molecules (another data set, or it changed)")
    if differences:
        raise ValueError(
            f"Cannot resume {str(path)!r}: it was written with "
            + "; ".join(differences)
            + ". Resume with the original settings, or start afresh with overwrite=True"
        )


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log lines up to the checkpoint's step: the steps after it are redone."""
    if not path.exists():
        return
    kept = [record for record in read_jsonl(path) if record.get("step", 0) <= step]
    with atomic_write(path) as f:
        for record in kept:
            f.write(json.dumps(record, allow_nan=False) + "\n")


def _save(
    path: Path,
    model: MoleBlend,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    epoch: int,
    position: int,
    generator: torch.Generator,
    world: int,
    config: PretrainConfig,
    extra: dict[str, Any] | None,
) -> None:
    state = _rng_state(generator)
    states = [state]
    if world > 1:
        states = [None] * world
        dist.all_gather_object(states, state)
    if _world()[0] == 0:
        save_checkpoint(
            path,
            {
                "kind": "pretrain",
                "encoder_config": model.config,
                "encoder_state": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "epoch": epoch,
                "position": position,
                "rng": states,
                "world_size": world,
                "config": asdict(config),
                **(extra or {}),
            },
        )
    if world > 1:
        dist.barrier()
