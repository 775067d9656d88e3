"""MoleBLEND pretraining: resumable, single process or DDP (``torchrun``)."""

from __future__ import annotations

import itertools
import json
import os
import random
import time
import warnings
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
from pyg_molblend.training.checkpoint import (
    data_fingerprint,
    data_identity,
    load_checkpoint,
    save_checkpoint,
)
from pyg_molblend.training.io import append_jsonl, atomic_write, json_safe, read_jsonl
from pyg_molblend.training.utils import (
    FiniteGuard,
    autocast,
    check_precision,
    clip_gradients,
    compile_layers,
    dense_batch,
    make_optimizer,
    pin_memory_for,
    precision_scope,
    rng_state,
    set_rng_state,
    setting_differences,
    warmup_cosine,
)

__all__ = ["CHECKPOINT_NAME", "SNAPSHOT_DIR", "PretrainConfig", "check_output", "pretrain"]

#: File name of the rolling pretraining checkpoint inside the output directory.
CHECKPOINT_NAME = "checkpoint.pt"
#: Folder of the output directory that holds the weights kept every ``keep_every`` steps.
SNAPSHOT_DIR = "snapshots"


@dataclass
class PretrainConfig:
    """Pretraining settings (reference: Adam, clip 5, warm-up then cosine decay).

    Examples:
        >>> config = PretrainConfig(steps=4000, batch_size=64)
        >>> config.mode, config.save_every, "seed" in PretrainConfig.RESUME_KEYS
        ('blend', 100, True)

    ``keep_every`` (default :obj:`None`: none) also keeps the weights every that many
    steps, so that a checkpoint can be picked by validation results afterwards.
    ``precision`` (default ``"fp32"``) is the arithmetic of the steps, one of
    :data:`~pyg_molblend.training.utils.PRECISIONS` (``"tf32"`` on CUDA only); like
    ``device``, a resumed run may change it, and ``compile`` (default :obj:`False`),
    which compiles the encoder's layers
    (:func:`~pyg_molblend.training.utils.compile_layers`; for CUDA, slower on the CPU).
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    clip_norm: float = 5.0
    save_every: int = 100
    keep_every: int | None = None
    seed: int = 0
    mode: str = "blend"
    device: str = "cpu"
    precision: str = "fp32"
    compile: bool = False
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.keep_every is not None and self.keep_every < 1:
            raise ValueError(f"keep_every must be positive or None, got {self.keep_every}")
        check_precision(self.precision, self.device)

    #: Settings a resumed run must share with its checkpoint (the others, such as
    #: ``save_every``, ``keep_every``, ``device`` or ``precision``, do not change what is
    #: computed, only where and how it is rounded).
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
        out = self.model.pretrain_loss(batch, mode=self.mode, generator=generator)
        return out.loss, out.parts


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
    With ``config.keep_every``, rank 0 also writes the weights alone (configuration,
    step, data fingerprint; no optimizer state) every that many steps to
    ``out/snapshots/step_<step>.pt``, readable by
    :func:`~pyg_molblend.training.checkpoint.load_encoder` and ``--checkpoint``: the
    candidates for picking a checkpoint by validation results. Batches hold molecules of
    similar size (:class:`~pyg_molblend.data.SizeBucketBatchSampler`, full batches only)
    drawn per epoch from the seed, so they are the same with or without a restart. Under
    ``torchrun`` (an initialised process group) the model is wrapped in DDP and each rank
    takes its share of every epoch's batches.

    A resumed run must have the checkpoint's model configuration, settings
    (:attr:`PretrainConfig.RESUME_KEYS`), number of processes and data
    (:func:`~pyg_molblend.training.checkpoint.data_fingerprint`); ``log.jsonl`` is cut
    back to the checkpoint's step, and snapshots after it are removed (the resumed run
    writes them again). Without :obj:`resume`, a folder that already holds a checkpoint is
    refused unless :obj:`overwrite` (which starts afresh and removes the old snapshots). A
    non-finite loss or gradient norm stops the run before the optimizer step, so no
    checkpoint ever holds the diverged weights. ``pyg-molblend pretrain`` first calls
    :func:`~pyg_molblend.training.utils.tune_malloc` (on glibc, a few per cent of a CPU
    step spent faulting in freed memory again); a script calling this function does that
    itself, once.

    Returns:
        A summary (steps, seconds, last losses, and the step it resumed from).

    Raises:
        ValueError: on a mismatching or unexpected checkpoint, or a diverged step.

    Examples:
        >>> import tempfile
        >>> from pyg_molblend.data import from_smiles
        >>> from pyg_molblend.models import MoleBlend
        >>> corpus = [from_smiles(s) for s in ["CCO", "CCN", "CCC", "CCCl"]]
        >>> config = PretrainConfig(steps=2, batch_size=2, warmup_steps=1, progress=False)
        >>> summary = pretrain(MoleBlend.from_preset("small"), corpus, tempfile.mkdtemp(), config)
        >>> summary["steps"], sorted(summary["last"])[:3]
        (2, ['3d', 'denoise', 'edge'])
    """
    run = _Run(model, dataset, Path(out), config, extra)
    run.restore(resume, overwrite)
    start_step = run.step
    bar = tqdm(
        total=config.steps,
        initial=run.step,
        desc="pretrain",
        disable=not config.progress or run.rank != 0,
    )
    start = time.perf_counter()
    last: dict[str, Any] = {}
    model.train()
    try:
        while run.step < config.steps:
            for batch in run.epoch_loader():
                last = run.train_step(batch)
                run.log(last, bar)
                if config.keep_every is not None and run.step % config.keep_every == 0:
                    run.snapshot()
                if run.step % config.save_every == 0 or run.step == config.steps:
                    run.save()
                if run.step >= config.steps:
                    break
            else:
                run.epoch, run.position = run.epoch + 1, 0
    finally:  # the error message, if any, starts on its own line
        bar.close()
    return {
        "steps": run.step,
        "resumed_from": start_step,
        "seconds": time.perf_counter() - start,
        "last": json_safe(last),
    }


class _Run:
    """The state of one pretraining run and its four phases: :meth:`restore` (a
    checkpoint, or a clean start), :meth:`train_step`, :meth:`log` and :meth:`save`.
    ``step``, ``epoch`` and ``position`` (batches done in this epoch) say where it is."""

    def __init__(
        self,
        model: MoleBlend,
        dataset: Dataset,
        out: Path,
        config: PretrainConfig,
        extra: dict[str, Any] | None,
    ) -> None:
        self.rank, self.world = _world()
        self.model, self.dataset, self.out, self.config = model, dataset, out, config
        self.device = device = torch.device(config.device)
        out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed + self.rank)
        random.seed(config.seed + self.rank)
        np.random.seed(config.seed + self.rank)
        model.to(device)
        if config.compile:
            compile_layers(model)
        self.step_module: nn.Module = _PretrainStep(model, config.mode)
        if self.world > 1:
            self.step_module = nn.parallel.DistributedDataParallel(
                self.step_module,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        self.optimizer = make_optimizer(model.parameters(), config.lr, config.weight_decay)
        self.guard = FiniteGuard(self.optimizer, device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(min(config.warmup_steps, config.steps), config.steps)
        )
        self.generator = torch.Generator(device=device).manual_seed(config.seed + 1000 * self.rank)
        self.sampler = SizeBucketBatchSampler(
            dataset,
            config.batch_size,
            seed=config.seed,
            drop_last=True,
            num_replicas=self.world,
            rank=self.rank,
        )
        if len(self.sampler) == 0:
            raise ValueError(
                f"{len(dataset)} molecules over {self.world} process(es) do not fill one "
                f"batch of {config.batch_size}"
            )
        self.step, self.epoch, self.position = 0, 0, 0
        self.checkpoint_path = out / CHECKPOINT_NAME
        self.snapshot_dir = out / SNAPSHOT_DIR
        self.log_path = out / "log.jsonl"
        self.fingerprint = data_fingerprint(dataset)
        self.identity = data_identity(dataset, self.fingerprint)
        self.extra = {
            **(extra or {}),
            "data_fingerprint": self.fingerprint,
            "data_identity": self.identity,
        }

    def restore(self, resume: bool, overwrite: bool) -> None:
        """Continue from the checkpoint (with :obj:`resume`) or start afresh, removing
        what an earlier run left (a folder with a checkpoint needs :obj:`overwrite`)."""
        path = self.checkpoint_path
        if resume and path.exists():
            payload = load_checkpoint(path, kind="pretrain")
            _check_resumable(
                payload, path, self.model, self.config, self.world, self.fingerprint, self.identity
            )
            self.model.load_state_dict(payload["encoder_state"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.scheduler.load_state_dict(payload["scheduler"])
            self.step, self.epoch = payload["step"], payload["epoch"]
            self.position = payload["position"]
            set_rng_state(payload["rng"][self.rank], blend=self.generator)
            if self.rank == 0:
                _truncate_log(self.log_path, self.step)
                _remove_snapshots(self.snapshot_dir, after=self.step)
                print(f"resuming from step {self.step} of {self.config.steps} ({path})")
        elif resume:
            if self.rank == 0:
                print(f"no checkpoint at {path}; starting fresh")
        else:
            check_output(self.out, resume, overwrite)
        if self.step == 0 and self.rank == 0:  # afresh: no old checkpoint, log or snapshot
            for stale in (path, self.log_path):
                stale.unlink(missing_ok=True)
            _remove_snapshots(self.snapshot_dir, after=0)
        if self.world > 1:
            dist.barrier()  # rank 0 has removed or cut the old files before anyone writes

    def epoch_loader(self) -> DataLoader:
        """The rest of the current epoch's batches."""
        self.sampler.set_epoch(self.epoch)
        return DataLoader(
            self.dataset,
            batch_sampler=_Skip(self.sampler, self.position),
            num_workers=self.config.num_workers,
            pin_memory=pin_memory_for(self.device),
            # Its own generator: iterating a DataLoader draws a base seed from the global
            # RNG otherwise, which would shift dropout after a resume.
            generator=torch.Generator(),
        )

    def train_step(self, batch: Batch) -> dict[str, Any]:
        """One optimizer step; returns its log record."""
        model, optimizer, scheduler = self.model, self.optimizer, self.scheduler
        precision = self.config.precision
        with precision_scope(precision, self.device):
            dense = dense_batch(batch, self.device, model.max_hops)
            optimizer.zero_grad()
            with autocast(precision, self.device):
                loss, parts = self.step_module(dense, self.generator)
            loss.backward()
            grad_norm = clip_gradients(optimizer, self.config.clip_norm)
            self.guard.check(
                loss,
                grad_norm,
                self.step + 1,
                scheduler.get_last_lr()[0],
                f"the last checkpoint ({self.checkpoint_path}) is unchanged",
            )
            optimizer.step()
        scheduler.step()
        self.guard.flush()  # the log line reads the loss anyway
        loss_value, grad_value = loss.item(), grad_norm.item()
        self.step += 1
        self.position += 1
        return {
            "step": self.step,
            "loss": loss_value,
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": grad_value,
            **{k: (None if v is None else float(v)) for k, v in parts.items()},
            "time": round(time.time(), 3),  # when the step ended: rates survive a resume
        }

    def log(self, record: dict[str, Any], bar: tqdm) -> None:
        """Rank 0: one line of ``log.jsonl`` and the progress bar."""
        if self.rank == 0:
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", spd_acc=record.get("spd_acc"))
            append_jsonl(self.log_path, record)

    def _weights(self) -> dict[str, Any]:
        """What every file of the run holds: the weights, their configuration, the step,
        the run's settings and the data fingerprint (no optimizer, position or RNG)."""
        return {
            "kind": "pretrain",
            "encoder_config": self.model.config,
            "encoder_state": self.model.state_dict(),
            "step": self.step,
            "world_size": self.world,
            "config": asdict(self.config),
            **self.extra,
        }

    def snapshot(self) -> None:
        """Rank 0: the weights alone, ``snapshots/step_<step>.pt`` (written atomically)."""
        if self.rank == 0:
            save_checkpoint(self.snapshot_dir / f"step_{self.step:07d}.pt", self._weights())

    def save(self) -> None:
        """Write the checkpoint atomically (rank 0), with every rank's RNG states."""
        state = rng_state(blend=self.generator)
        states = [state]
        if self.world > 1:
            states = [None] * self.world
            dist.all_gather_object(states, state)
        if self.rank == 0:
            save_checkpoint(
                self.checkpoint_path,
                {
                    **self._weights(),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "epoch": self.epoch,
                    "position": self.position,
                    "rng": states,
                },
            )


class _Skip:
    """The batches of a batch sampler after the first :obj:`start`, drawn lazily (a list
    of an epoch's batches holds about 41 bytes per molecule: 41 MB for a million)."""

    def __init__(self, sampler: SizeBucketBatchSampler, start: int) -> None:
        self.sampler, self.start = sampler, start

    def __iter__(self) -> Any:
        return itertools.islice(iter(self.sampler), self.start, None)

    def __len__(self) -> int:
        return max(len(self.sampler) - self.start, 0)


def check_output(out: str | os.PathLike, resume: bool, overwrite: bool) -> None:
    """Refuse to start afresh in a folder that holds a checkpoint unless told to
    overwrite it (call it before any long preparation).

    Examples:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (out / CHECKPOINT_NAME).write_bytes(b"")
        >>> try:
        ...     check_output(out, resume=False, overwrite=False)
        ... except ValueError as error:
        ...     "resume=True" in str(error)
        True
    """
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
    identity: str,
) -> None:
    """Refuse to continue a checkpoint under other settings, naming each difference.

    Data whose fingerprint differs from the checkpoint's but whose identity does not
    (:func:`~pyg_molblend.training.checkpoint.data_identity`: the same molecules in the
    same order, some with other coordinates, as in an on-disk store rebuilt where RDKit's
    wall-clock conformer timeout fell differently) continues with a warning."""
    differences = setting_differences(
        payload.get("config", {}), asdict(config), PretrainConfig.RESUME_KEYS
    )
    stored = MoleBlend.stored_config(payload["encoder_config"])
    differences += setting_differences(stored, model.config, prefix="model ")
    if payload.get("world_size") != world:
        differences.append(f"processes {payload.get('world_size')} (this run: {world})")
    same_molecules = payload.get("data_identity") == identity
    if payload.get("data_fingerprint") != fingerprint and not same_molecules:
        differences.append("the input molecules (another data set, or it changed)")
    if differences:
        raise ValueError(
            f"Cannot resume {str(path)!r}: it was written with "
            + "; ".join(differences)
            + ". Resume with the original settings, or start afresh with overwrite=True"
        )
    if payload.get("data_fingerprint") != fingerprint:
        warnings.warn(
            f"Resuming {str(path)!r} on data that holds its molecules in the same order "
            "but not all of the same coordinates (an on-disk store prepared again from "
            "the same inputs, where RDKit's conformer timeout, which is wall-clock, fell "
            "on other molecules): the run continues, but not bit for bit",
            stacklevel=2,
        )


def _remove_snapshots(folder: Path, after: int) -> None:
    """Remove the snapshots of steps after :obj:`after` (a resumed run redoes those steps;
    a fresh start keeps none of an earlier run's)."""
    if not folder.is_dir():
        return
    for path in folder.glob("step_*.pt"):
        step = path.stem[len("step_") :]
        if step.isdigit() and int(step) > after:
            path.unlink()


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log lines up to the checkpoint's step: the steps after it are redone."""
    if not path.exists():
        return
    kept = [record for record in read_jsonl(path) if record.get("step", 0) <= step]
    with atomic_write(path) as f:
        for record in kept:
            f.write(json.dumps(record, allow_nan=False) + "\n")
