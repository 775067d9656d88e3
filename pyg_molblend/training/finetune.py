"""Fine-tuning and evaluation loops for graph property prediction."""

from __future__ import annotations

import copy
import hashlib
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader
from tqdm.auto import tqdm

from pyg_molblend.constants import DEFAULT_MAX_HOPS
from pyg_molblend.data import DenseMolBatch, SizeBucketBatchSampler
from pyg_molblend.models import MoleBlendPredictor
from pyg_molblend.training.checkpoint import (
    data_fingerprint,
    load_checkpoint,
    predictor_checkpoint,
    save_checkpoint,
)
from pyg_molblend.training.metrics import (
    METRICS,
    check_metric,
    compute_metrics,
    higher_is_better,
    primary_metric,
)
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
    seed_everything,
    set_rng_state,
    setting_differences,
    warmup_cosine,
)

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "finetune",
    "map_batches",
    "predict",
    "stack_targets",
    "train_step",
]


@dataclass
class FinetuneConfig:
    """Optimisation settings (reference defaults: Adam, clip 5, warm-up of
    ``ceil(epochs / 10)`` epochs, then cosine decay).

    Attributes:
        freeze_encoder (bool): train the head only: the encoder's parameters get no
            gradient and are left out of the optimizer, so they end bit-identical. The
            encoder still runs in training mode (its dropout is active, as in full
            fine-tuning). (default: :obj:`False`)
        unfreeze_after (int, optional): staged unfreezing: the encoder is frozen (as with
            :obj:`freeze_encoder`) for the first :obj:`unfreeze_after` epochs and trained
            from the next one on, in a second parameter group of the same optimizer, whose
            AdamW moments start at the unfreezing (frozen weights take no step and no
            weight decay). Between 1 and ``epochs - 1``; not with :obj:`freeze_encoder`.
            (default: :obj:`None`)
        class_weights (str, optional): ``"balanced"`` weights the positive labels of each
            classification task by ``n_negative / n_positive`` of the training set's
            present labels, and each class of a multiclass task by :math:`n / (K n_k)`
            (:meth:`~pyg_molblend.models.MoleBlendPredictor.fit_class_weights`);
            :obj:`None` leaves the predictor's weights as they are (unweighted unless
            set). (default: :obj:`None`)
        patience (int, optional): early stopping: stop after :obj:`patience` consecutive
            epochs without a better validation :obj:`metric` (an undefined, NaN, score is
            not better). With :obj:`unfreeze_after`, only epochs after the unfreezing
            count. :obj:`None` runs every epoch. (default: :obj:`None`)
        metric (str, optional): the validation metric that selects the epoch and drives
            :obj:`patience`, one of
            :data:`~pyg_molblend.training.metrics.METRICS` for the task type; :obj:`None`
            is :func:`~pyg_molblend.training.metrics.primary_metric` (ROC-AUC or RMSE).
            (default: :obj:`None`)
        precision (str): the arithmetic of training and evaluation, one of
            :data:`~pyg_molblend.training.utils.PRECISIONS`: ``"fp32"``, ``"tf32"`` (CUDA
            only) or ``"bf16"`` (autocast; on a CPU often slower than fp32: time it).
            Like :obj:`device`, it changes the rounding, not the settings a resumed run
            must share. (default: :obj:`"fp32"`)
        compile (bool): compile the encoder's transformer layers
            (:func:`~pyg_molblend.training.utils.compile_layers`: :func:`torch.compile`,
            dynamic shapes), for CUDA, where a step is bound by launching operators; on
            the CPU it is slower. Like :obj:`precision`, it changes the rounding (and the
            dropout masks), not the settings a resumed run must share. (default:
            :obj:`False`)
        state_path (str, optional): a file the training state (weights, optimizer,
            schedule, random states, the selection so far) is written to, atomically,
            at the end of an epoch once :obj:`state_interval` seconds have passed since the
            last write (or the start), and removed once the run has ended; a fresh run
            first removes an older one. :obj:`None` writes none. (default: :obj:`None`)
        state_interval (float): seconds between two writes of the state: a ``small``
            model's state is 12 MB, about 30 ms to write, which would add 3-5% to an
            ESOL epoch if written after each; a run killed before the first write starts
            over. 0 writes after every epoch. (default: :obj:`60.0`)
        resume (bool): continue from :obj:`state_path` when it exists: the run then ends
            as the uninterrupted run would have, bit for bit on the same device and
            :obj:`num_workers`. A state written with other settings (those of
            :attr:`RESUME_KEYS`), another model or other data is refused with a
            :class:`ValueError` naming the differences. (default: :obj:`False`)

    Examples:
        >>> config = FinetuneConfig(epochs=10, lr=3e-4)
        >>> config.batch_size, config.clip_norm
        (32, 5.0)
        >>> try:
        ...     FinetuneConfig(epochs=0)
        ... except ValueError as error:
        ...     print(error)
        epochs must be positive, got 0
        >>> config = FinetuneConfig(epochs=10, unfreeze_after=2, patience=3, metric="pr_auc")
        >>> try:
        ...     FinetuneConfig(epochs=3, unfreeze_after=3)
        ... except ValueError as error:
        ...     print(error)
        unfreeze_after must be an integer from 1 to epochs - 1 = 2, got 3
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_epochs: int | None = None
    clip_norm: float = 5.0
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    compile: bool = False
    num_workers: int = 0
    progress: bool = True
    freeze_encoder: bool = False
    unfreeze_after: int | None = None
    class_weights: str | None = None
    patience: int | None = None
    metric: str | None = None
    state_path: str | None = None
    state_interval: float = 60.0
    resume: bool = False

    #: Settings a resumed run must share with the one that wrote the state.
    RESUME_KEYS = (
        "epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "warmup_epochs",
        "clip_norm",
        "seed",
        "freeze_encoder",
        "unfreeze_after",
        "class_weights",
        "patience",
        "metric",
    )

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        check_precision(self.precision, self.device)
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not isinstance(self.freeze_encoder, bool):
            raise ValueError(f"freeze_encoder must be True or False, got {self.freeze_encoder!r}")
        if self.unfreeze_after is not None:
            if not _is_int(self.unfreeze_after) or not 1 <= self.unfreeze_after < self.epochs:
                raise ValueError(
                    f"unfreeze_after must be an integer from 1 to epochs - 1 = "
                    f"{self.epochs - 1}, got {self.unfreeze_after!r}"
                )
            if self.freeze_encoder:
                raise ValueError(
                    f"freeze_encoder=True keeps the encoder frozen for the whole run, "
                    f"unfreeze_after={self.unfreeze_after} unfreezes it; give one of them"
                )
        if self.class_weights not in (None, "balanced"):
            raise ValueError(
                f"class_weights must be None or 'balanced', got {self.class_weights!r}"
            )
        if not self.state_interval >= 0:
            raise ValueError(f"state_interval must be >= 0 seconds, got {self.state_interval}")
        if self.patience is not None and (not _is_int(self.patience) or self.patience < 1):
            raise ValueError(f"patience must be a positive integer or None, got {self.patience!r}")
        known = sorted({name for names in METRICS.values() for name in names})
        if self.metric is not None and self.metric not in known:
            raise ValueError(f"Unknown metric {self.metric!r} (known: {', '.join(known)})")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class FinetuneResult:
    """Metrics of the model selected on validation, and the run's history.

    Examples:
        >>> from pyg_molblend.data import from_smiles
        >>> from pyg_molblend.models import MoleBlend, MoleBlendPredictor
        >>> data = [from_smiles(s) for s in ["CCO", "CCN", "CCC", "CCCl", "c1ccccc1", "CC=O"]]
        >>> for i, d in enumerate(data):
        ...     d.y = torch.tensor([[float(i)]])
        >>> predictor = MoleBlendPredictor(MoleBlend.from_preset("small"), 1, "regression")
        >>> config = FinetuneConfig(epochs=2, batch_size=2, progress=False)
        >>> result = finetune(predictor, data[:4], data[4:], data[4:], config)
        >>> result.metric, sorted(result.test), len(result.history), result.epochs_run
        ('rmse', ['mae', 'r2', 'rmse'], 2, 2)

    Attributes:
        metric (str): the validation metric that selected :attr:`best_epoch`.
        valid, test (dict[str, float]): every metric of the selected model (``test`` is
            empty when no test set was given).
        best_epoch (int): the selected epoch (1-based).
        seconds (float): wall time of the run.
        history (list[dict[str, float]]): one entry per epoch run: ``epoch``, the mean
            training ``loss`` and the validation metrics.
        test_predictions (np.ndarray, optional): the selected model's test predictions
            (:obj:`None` without a test set).
        epochs_run (int): epochs trained, fewer than ``config.epochs`` after an early
            stop (:attr:`FinetuneConfig.patience`); :obj:`None` given means
            ``len(history)``.
    """

    metric: str
    valid: dict[str, float]
    test: dict[str, float]
    best_epoch: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    test_predictions: np.ndarray | None = None
    epochs_run: int | None = None

    def __post_init__(self) -> None:
        if self.epochs_run is None:
            self.epochs_run = len(self.history)


@torch.no_grad()
def map_batches(
    fn: Callable[[DenseMolBatch], torch.Tensor],
    dataset: Dataset | Sequence,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
    desc: str = "predict",
    max_hops: int = DEFAULT_MAX_HOPS,
    precision: str = "fp32",
) -> torch.Tensor | None:
    """``fn(dense)`` over :obj:`dataset` in batches of molecules of similar size
    (:class:`~pyg_molblend.data.SizeBucketBatchSampler`, densified by
    :func:`dense_batch`), rows put back in dataset order and concatenated on the CPU;
    :obj:`None` for an empty dataset. :obj:`fn` runs in :obj:`precision`
    (:data:`~pyg_molblend.training.utils.PRECISIONS`; its rows keep the dtype it returns).

    Examples:
        >>> from pyg_molblend.data import from_smiles
        >>> from pyg_molblend.models import MoleBlend
        >>> encoder = MoleBlend.from_preset("small").eval()
        >>> graphs = [from_smiles("CCO"), from_smiles("c1ccccc1"), from_smiles("CN")]
        >>> map_batches(lambda dense: encoder(dense), graphs, batch_size=2).shape  # in input order
        torch.Size([3, 128])
    """
    batches = list(SizeBucketBatchSampler(dataset, batch_size, shuffle=False))
    loader = DataLoader(dataset, batch_sampler=batches, pin_memory=pin_memory_for(device))
    outputs = []
    with precision_scope(precision, device):
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            dense = dense_batch(batch, device, max_hops)
            with autocast(precision, device):
                outputs.append(fn(dense).cpu())
    if not outputs:
        return None
    order = torch.tensor([i for index in batches for i in index])
    return torch.cat(outputs)[torch.argsort(order)]


def predict(
    predictor: MoleBlendPredictor,
    dataset: Dataset | Sequence,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
    desc: str = "predict",
    precision: str = "fp32",
) -> np.ndarray:
    """Predictions ``[len(dataset), num_outputs]`` in dataset order (probabilities or
    values; multiclass: the probabilities of each task's classes side by side), as
    float32 whatever the :obj:`precision` they were computed in.

    Examples:
        >>> from pyg_molblend.data import from_smiles
        >>> from pyg_molblend.models import MoleBlend, MoleBlendPredictor
        >>> predictor = MoleBlendPredictor(MoleBlend.from_preset("small"), 1, "regression")
        >>> predict(predictor, [from_smiles("CCO"), from_smiles("c1ccccc1O")]).shape
        (2, 1)
    """
    predictor.eval()
    rows = map_batches(
        predictor.predict,
        dataset,
        batch_size,
        device,
        progress,
        desc,
        predictor.encoder.max_hops,
        precision,
    )
    if rows is None:
        return np.zeros((0, predictor.num_outputs), dtype=np.float32)
    return rows.float().numpy()


def stack_targets(dataset: Dataset | Sequence, num_tasks: int) -> np.ndarray:
    """The targets ``[len(dataset), num_tasks]`` of a dataset's graphs (NaN where missing).

    Examples:
        >>> from pyg_molblend.data import from_smiles
        >>> graphs = [from_smiles("CCO"), from_smiles("CCN")]
        >>> graphs[0].y, graphs[1].y = torch.tensor([[1.0, 0.5]]), torch.tensor([[0.0, 2.0]])
        >>> stack_targets(graphs, 2).tolist()
        [[1.0, 0.5], [0.0, 2.0]]
    """
    if len(dataset) == 0:
        return np.zeros((0, num_tasks), dtype=np.float32)
    return torch.cat([dataset[i].y.view(1, -1) for i in range(len(dataset))]).numpy()


def _descriptors(dataset: Dataset | Sequence, num_descriptors: int) -> torch.Tensor:
    """``[len(dataset), D]`` descriptors of the training graphs, for the standardisation."""
    rows = []
    for i in range(len(dataset)):
        value = getattr(dataset[i], "descriptors", None)
        if value is None or value.numel() != num_descriptors:
            got = None if value is None else list(value.shape)
            raise ValueError(
                f"The predictor uses {num_descriptors} descriptors per molecule but training "
                f"molecule {i} has descriptors {got}; add them with "
                "pyg_molblend.transforms.AddDescriptors"
            )
        rows.append(value.view(1, -1).float())
    return torch.cat(rows)


def evaluate(
    predictor: MoleBlendPredictor,
    dataset: Dataset | Sequence,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
    desc: str = "evaluate",
    precision: str = "fp32",
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics of :obj:`predictor` on :obj:`dataset`, and its predictions."""
    pred = predict(predictor, dataset, batch_size, device, progress, desc, precision)
    targets = stack_targets(dataset, predictor.num_tasks)
    return compute_metrics(predictor.task_type, targets, pred), pred


def train_step(
    predictor: MoleBlendPredictor,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    guard: FiniteGuard,
    clip_norm: float,
    device: str | torch.device,
    kept: str,
    precision: str = "fp32",
) -> torch.Tensor:
    """One optimizer step on a loader's batch; returns the detached loss. It runs in
    :obj:`precision` (:func:`~pyg_molblend.training.utils.precision_scope`; the forward
    pass and the loss under :func:`~pyg_molblend.training.utils.autocast`). On a CUDA
    device nothing in it waits for the device (``tests/test_cuda.py`` runs it under
    ``torch.cuda.set_sync_debug_mode("error")``).

    Examples:
        >>> from torch_geometric.data import Batch
        >>> from pyg_molblend.data import from_smiles
        >>> from pyg_molblend.models import MoleBlend, MoleBlendPredictor
        >>> from pyg_molblend.training.utils import FiniteGuard, make_optimizer, warmup_cosine
        >>> predictor = MoleBlendPredictor(MoleBlend.from_preset("small"), 1, "regression")
        >>> batch = Batch.from_data_list([from_smiles("CCO"), from_smiles("CCN")])
        >>> batch.y = torch.tensor([[0.5], [1.5]])
        >>> optimizer = make_optimizer(predictor.parameters(), lr=1e-4, weight_decay=0.0)
        >>> scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(1, 10))
        >>> guard = FiniteGuard(optimizer, "cpu")
        >>> loss = train_step(predictor, batch, optimizer, scheduler, guard, 5.0, "cpu",
        ...                   "the initial weights")
        >>> loss.requires_grad, scheduler.last_epoch
        (False, 1)
    """
    with precision_scope(precision, device):
        dense = dense_batch(batch, device, predictor.encoder.max_hops)
        optimizer.zero_grad()
        with autocast(precision, device):
            loss = predictor.loss(batch, predictor(dense))
        loss.backward()
        grad_norm = clip_gradients(optimizer, clip_norm)
        guard.check(loss, grad_norm, scheduler.last_epoch + 1, scheduler.get_last_lr()[0], kept)
        optimizer.step()
    scheduler.step()
    return loss.detach()


def _identity(
    predictor: MoleBlendPredictor,
    config: FinetuneConfig,
    train_set: Dataset | Sequence,
    valid_set: Dataset | Sequence,
) -> dict[str, Any]:
    """What a resumed run must share with the run that wrote the state: the settings of
    :attr:`FinetuneConfig.RESUME_KEYS`, the model, its weights at the start and the data."""
    digest = hashlib.blake2b(digest_size=16)
    for key, value in predictor.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy())
    head = predictor_checkpoint(predictor)
    return {
        "config": {key: getattr(config, key) for key in FinetuneConfig.RESUME_KEYS},
        "model": {**head["predictor"], "encoder": head["encoder_config"]},
        "initial_weights": digest.hexdigest(),
        "data": {"train": data_fingerprint(train_set), "valid": data_fingerprint(valid_set)},
    }


def _check_state(state: dict[str, Any], identity: dict[str, Any], path: Path) -> None:
    """Refuse to continue a state written under other settings, naming each difference."""
    differences = setting_differences(state["config"], identity["config"])
    differences += setting_differences(state["model"], identity["model"], prefix="model ")
    if state["initial_weights"] != identity["initial_weights"]:
        differences.append("the model's weights at the start (other pretrained weights?)")
    for part in ("train", "valid"):
        if state["data"][part] != identity["data"][part]:
            differences.append(f"the {part} molecules (another split or data set)")
    if differences:
        raise ValueError(
            f"Cannot resume {str(path)!r}: it was written with "
            + "; ".join(differences)
            + ". Resume with the original settings, or start afresh without resume"
        )


def finetune(
    predictor: MoleBlendPredictor,
    train_set: Dataset | Sequence,
    valid_set: Dataset | Sequence,
    test_set: Dataset | Sequence | None,
    config: FinetuneConfig,
) -> FinetuneResult:
    """Train on :obj:`train_set`, select the epoch on :obj:`valid_set` only, and evaluate
    the selected model once on :obj:`test_set` (:obj:`None`: not at all, as in a
    hyperparameter search; ``result.test`` is then empty).

    Fitted on the training set before the first step: the regression standardisation
    (:meth:`~pyg_molblend.models.MoleBlendPredictor.fit_targets`), the descriptor
    standardisation of a predictor with descriptors (``fit_descriptors``; every graph
    needs ``descriptors``) and, with ``class_weights="balanced"``, the class weights
    (``fit_class_weights``). :class:`FinetuneConfig` also sets encoder freezing, early
    stopping and the selection metric; the encoder's ``requires_grad`` flags are
    restored when it returns.

    Raises:
        ValueError: for empty train or valid sets, a metric or class weights that do not
            fit the task type, or missing descriptors.

    Examples:
        >>> from pyg_molblend.data import from_smiles
        >>> from pyg_molblend.models import MoleBlend, MoleBlendPredictor
        >>> data = [from_smiles(s) for s in ["CCO", "CCN", "CCC", "CCCl", "c1ccccc1", "CC=O"]]
        >>> for i, d in enumerate(data):
        ...     d.y = torch.tensor([[float(i % 2)]])
        >>> predictor = MoleBlendPredictor(MoleBlend.from_preset("small"), num_tasks=1)
        >>> config = FinetuneConfig(epochs=1, batch_size=2, progress=False)
        >>> result = finetune(predictor, data[:4], data[4:], data[4:], config)
        >>> result.metric, result.best_epoch, result.test_predictions.shape
        ('roc_auc', 1, (2, 1))
    """
    if len(train_set) == 0 or len(valid_set) == 0:
        raise ValueError(
            f"Need non-empty train and valid sets, got {len(train_set)} and {len(valid_set)}"
        )
    task_type = predictor.task_type
    if config.metric is None:
        metric = primary_metric(task_type)
    else:
        metric = check_metric(task_type, config.metric)
    if config.class_weights is not None and task_type == "regression":
        raise ValueError(
            f"class_weights={config.class_weights!r} weights classification labels, but the "
            f"predictor does {task_type}"
        )
    start = time.perf_counter()
    state, state_path, identity = None, None, {}
    if config.state_path is not None:  # before seeding: reading the data may draw from it
        state_path = Path(config.state_path)
        identity = _identity(predictor, config, train_set, valid_set)
        if config.resume and state_path.exists():
            state = load_checkpoint(state_path, kind="finetune_state")
            _check_state(state, identity, state_path)
        elif config.resume:
            print(f"no training state at {state_path}; starting fresh")
        state_path.unlink(missing_ok=True)  # a fresh run never leaves an older run's state
    seed_everything(config.seed)
    device = config.device
    predictor.to(device)
    if config.compile:
        compile_layers(predictor.encoder)
    train_targets = torch.from_numpy(stack_targets(train_set, predictor.num_tasks))
    predictor.fit_targets(train_targets)
    if config.class_weights == "balanced":
        predictor.fit_class_weights(train_targets)
    if predictor.num_descriptors > 0:
        predictor.fit_descriptors(_descriptors(train_set, predictor.num_descriptors))
    sampler = SizeBucketBatchSampler(train_set, config.batch_size, seed=config.seed)
    loader = DataLoader(
        train_set,
        batch_sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=pin_memory_for(device),
        # Its own generator: iterating a DataLoader draws a base seed from the global RNG
        # otherwise, which would shift the dropout masks.
        generator=torch.Generator(),
    )
    encoder_params = list(predictor.encoder.parameters())
    encoder_grad = [p.requires_grad for p in encoder_params]
    if config.freeze_encoder or config.unfreeze_after is not None:
        in_encoder = {id(p) for p in encoder_params}
        groups = [{"params": [p for p in predictor.parameters() if id(p) not in in_encoder]}]
        if config.unfreeze_after is not None:  # no grad while frozen: AdamW skips them
            groups.append({"params": encoder_params})
        optimizer = make_optimizer(groups, config.lr, config.weight_decay)  # type: ignore[arg-type]
        for param in encoder_params:
            param.requires_grad_(False)
    else:
        optimizer = make_optimizer(predictor.parameters(), config.lr, config.weight_decay)
    guard = FiniteGuard(optimizer, device)
    warmup = config.warmup_epochs
    warmup = math.ceil(config.epochs / 10) if warmup is None else warmup
    total = config.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(warmup * len(loader), total)
    )
    better = higher_is_better(metric)

    def assess(dataset: Dataset | Sequence) -> tuple[dict[str, float], np.ndarray]:
        return evaluate(predictor, dataset, config.batch_size, device, precision=config.precision)

    best_score, best_epoch, best_state = None, 0, None
    stale = 0  # epochs since the score last improved to a defined value
    history: list[dict[str, Any]] = []
    first, earlier_seconds, written = 1, 0.0, start
    if state is not None:
        predictor.load_state_dict(state["predictor_state"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        best_score, best_epoch = state["best_score"], state["best_epoch"]
        best_state, stale, history = state["best_state"], state["stale"], state["history"]
        first = state["epoch"] + 1
        earlier_seconds = state["seconds"]
        set_rng_state(state["rng"], loader=loader.generator)
        if config.unfreeze_after is not None and first > config.unfreeze_after + 1:
            for param, grad in zip(encoder_params, encoder_grad, strict=True):
                param.requires_grad_(grad)
        print(f"resuming after epoch {state['epoch']} of {config.epochs} ({state_path})")
    bar = tqdm(range(first, config.epochs + 1), desc="finetune", disable=not config.progress)
    try:
        for epoch in bar:
            if config.unfreeze_after is not None and epoch == config.unfreeze_after + 1:
                for param, grad in zip(encoder_params, encoder_grad, strict=True):
                    param.requires_grad_(grad)
                stale = 0
            sampler.set_epoch(epoch)
            predictor.train()
            total_loss = torch.zeros((), device=device)
            count = 0
            for batch in loader:
                loss = train_step(
                    predictor,
                    batch,
                    optimizer,
                    scheduler,
                    guard,
                    config.clip_norm,
                    device,
                    f"epoch {epoch}; nothing was saved",
                    config.precision,
                )
                total_loss += loss * batch.num_graphs
                count += batch.num_graphs
            guard.flush()
            mean_loss = total_loss.item() / count
            valid_metrics, _ = assess(valid_set)
            score = valid_metrics[metric]
            history.append({"epoch": epoch, "loss": mean_loss, **valid_metrics})
            if math.isnan(score) and epoch == 1:
                why = "a single class in the validation set?" if better else "no valid targets?"
                warnings.warn(
                    f"Validation {metric} is undefined ({why}); "
                    "epochs with an undefined score are only kept until a defined one appears",
                    stacklevel=2,
                )
            improved = (
                best_score is None
                or math.isnan(best_score)
                or (
                    not math.isnan(score) and (score > best_score if better else score < best_score)
                )
            )
            if improved:
                best_score, best_epoch = score, epoch
                best_state = copy.deepcopy(predictor.state_dict())
            stale = 0 if improved and not math.isnan(score) else stale + 1
            bar.set_postfix(loss=f"{mean_loss:.4f}", **{f"valid_{metric}": f"{score:.4f}"})
            frozen = config.unfreeze_after is not None and epoch <= config.unfreeze_after
            stopped = config.patience is not None and not frozen and stale >= config.patience
            now = time.perf_counter()
            last = stopped or epoch == config.epochs  # the state is removed right after
            if state_path is not None and not last and now - written >= config.state_interval:
                written = now
                save_checkpoint(
                    state_path,
                    {
                        "kind": "finetune_state",
                        **identity,
                        "predictor_state": predictor.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "epoch": epoch,
                        "best_score": best_score,
                        "best_epoch": best_epoch,
                        "best_state": best_state,
                        "stale": stale,
                        "history": history,
                        "seconds": earlier_seconds + now - start,
                        "rng": rng_state(loader=loader.generator),
                    },
                )
            if stopped:
                break
    finally:  # the error message, if any, starts on its own line
        bar.close()
        for param, grad in zip(encoder_params, encoder_grad, strict=True):
            param.requires_grad_(grad)
    assert best_state is not None
    predictor.load_state_dict(best_state)
    valid_metrics, _ = assess(valid_set)
    test_metrics: dict[str, float] = {}
    test_pred = None
    if test_set is not None:
        test_metrics, test_pred = assess(test_set)
    if state_path is not None:
        state_path.unlink(missing_ok=True)  # the run has ended: nothing to resume
    return FinetuneResult(
        metric=metric,
        valid=valid_metrics,
        test=test_metrics,
        best_epoch=best_epoch,
        seconds=earlier_seconds + time.perf_counter() - start,
        history=history,
        test_predictions=test_pred,
        epochs_run=len(history),
    )
