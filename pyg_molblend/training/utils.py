"""Helpers shared by the fine-tuning and pretraining loops: seeding, the learning-rate
schedule, the optimizer, the non-finite step guard and the dense batch of a loader's batch."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import platform
import random
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Batch

from pyg_molblend.data import DenseMolBatch, to_dense
from pyg_molblend.training.io import json_safe

__all__ = [
    "PRECISIONS",
    "FiniteGuard",
    "autocast",
    "check_finite_step",
    "check_precision",
    "clip_gradients",
    "compile_layers",
    "cpu_has_bf16_kernels",
    "dense_batch",
    "make_optimizer",
    "onednn_fp32_matmul",
    "pin_memory_for",
    "precision_scope",
    "rng_state",
    "seed_everything",
    "set_rng_state",
    "setting_differences",
    "tune_malloc",
    "warmup_cosine",
]


#: Environment variables through which a user configures glibc's allocator; when one is
#: set, :func:`tune_malloc` leaves the allocator alone.
MALLOC_ENVIRONMENT = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "GLIBC_TUNABLES",
)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)


def tune_malloc(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Makes glibc's ``malloc`` keep freed tensor memory for the next training step instead
    of returning it to the operating system, which then hands it back page by page.

    By default glibc serves large blocks with ``mmap`` (a threshold that adapts up to 32
    MiB) and gives the top of its heap back once more than twice that threshold is free.
    A training step frees hundreds of MB of activations at its end, so every step took
    its memory back as fresh pages, each a page fault: a ``small`` pretraining step (64
    molecules, one AVX2 core) took 3,800-14,400 faults and 9-31 ms of kernel time (of
    about 290 ms); with blocks up to :obj:`mmap_threshold` from the heap and up to
    :obj:`trim_threshold` of free heap kept, under 1,000 faults and 1-3 ms. The memory
    kept is at most :obj:`trim_threshold` beyond what the process holds in use. The
    command line calls this before every command; call it once at the start of a training
    script for the same effect (it lasts for the process and the loader workers forked
    from it).

    Nothing is changed, and :obj:`False` returned, on a C library other than glibc or when
    one of :data:`MALLOC_ENVIRONMENT` is set (the user's own settings win).

    Args:
        mmap_threshold (int, optional): blocks smaller than this come from the heap; at
            most 32 MiB on 64-bit glibc. (default: 32 MiB)
        trim_threshold (int, optional): free memory kept at the top of the heap.
            (default: 256 MiB)

    Returns:
        whether the settings were applied.

    Raises:
        ValueError: for a threshold outside ``[0, 2**31)``.
    """
    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if not 0 <= value < 2**31:
            raise ValueError(f"{name} must be in [0, 2**31) bytes, got {value}")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in MALLOC_ENVIRONMENT):
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # The threshold first: setting either one turns glibc's adaptive threshold off, and a
    # fixed 128 KiB threshold with a large trim threshold is far slower than the default
    # (every block of an activation's size mapped afresh: 2.5M faults in 16 steps).
    if not mallopt(_M_MMAP_THRESHOLD, mmap_threshold):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA).

    Examples:
        >>> seed_everything(0); a = torch.rand(1)
        >>> seed_everything(0); bool(torch.equal(a, torch.rand(1)))
        True
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state(**generators: torch.Generator) -> dict[str, Any]:
    """Every random state a training loop draws from (Python's, NumPy's, torch's CPU and,
    once CUDA is in use, every GPU's) plus the named :obj:`generators`', as tensors,
    numbers, strings and lists: what a ``weights_only`` checkpoint may hold, so that a
    resumed run draws what the uninterrupted one would have.

    Examples:
        >>> loader_rng = torch.Generator().manual_seed(1)
        >>> state = rng_state(loader=loader_rng)
        >>> a = (torch.rand(1), torch.rand(1, generator=loader_rng))
        >>> set_rng_state(state, loader=loader_rng)
        >>> a == (torch.rand(1), torch.rand(1, generator=loader_rng))
        True
    """
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        **{key: generator.get_state() for key, generator in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], **generators: torch.Generator) -> None:
    """Restore what :func:`rng_state` saved (the CUDA states where there are as many GPUs)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    for key, generator in generators.items():
        generator.set_state(state[key])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)


def setting_differences(
    stored: dict[str, Any],
    current: dict[str, Any],
    keys: Iterable[str] | None = None,
    prefix: str = "",
) -> list[str]:
    """``"<prefix><key> <stored> (this run: <current>)"`` for each of :obj:`keys` (default:
    the stored ones) whose values differ, compared as JSON: what a resumed run reports
    when it refuses a state written under other settings.

    Examples:
        >>> setting_differences({"lr": 1e-4, "seed": 0}, {"lr": 3e-4, "seed": 0})
        ['lr 0.0001 (this run: 0.0003)']
    """
    return [
        f"{prefix}{key} {stored.get(key)!r} (this run: {current.get(key)!r})"
        for key in (stored if keys is None else keys)
        if json_safe(stored.get(key)) != json_safe(current.get(key))
    ]


def warmup_cosine(warmup_steps: int, total_steps: int) -> Any:
    """Multiplier of a linear warm-up followed by cosine decay to 0.

    Examples:
        >>> factor = warmup_cosine(warmup_steps=2, total_steps=6)
        >>> [round(factor(step), 2) for step in range(6)]
        [0.5, 1.0, 1.0, 0.85, 0.5, 0.15]
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def make_optimizer(
    parameters: Iterable[torch.nn.Parameter], lr: float, weight_decay: float
) -> torch.optim.AdamW:
    """AdamW with the fused kernel: one call for all parameters instead of about ten
    small operations per parameter tensor (the loop was 14% of a ``small`` fine-tuning
    step on CPU).

    Examples:
        >>> parameters = torch.nn.Linear(2, 1).parameters()
        >>> optimizer = make_optimizer(parameters, lr=1e-3, weight_decay=0.0)
        >>> type(optimizer).__name__, optimizer.defaults["fused"]
        ('AdamW', True)
    """
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=True)


#: The :func:`torch.compile` backend of :func:`compile_layers`. Inductor generates fused
#: kernels (Triton on CUDA, C++ on the CPU, which needs a compiler); the tests set
#: ``"aot_eager"``, which traces the same forward and backward graphs and runs them
#: without generating code.
COMPILE_BACKEND = "inductor"


def compile_layers(model: torch.nn.Module) -> torch.nn.Module:
    """Compile each transformer layer of a :class:`~pyg_molblend.models.MoleBlend` (its
    ``layers``) in place with :func:`torch.compile` (:meth:`torch.nn.Module.compile`,
    dynamic shapes: one graph serves every batch size and atom count instead of one per
    shape); returns :obj:`model`. Parameters, ``state_dict`` keys and the values computed
    are unchanged (to rounding; dropout draws its masks inside the compiled code). The
    layers share their graphs (stochastic depth's per-layer probability is an input, not
    a branch); fine-tuning makes up to eight of them (training or inference, every
    position or the graph token only, batches of one molecule or more), which is torch's
    default limit per function, so a process that compiles fine-tuning and then
    pretraining calls :func:`torch._dynamo.reset` in between.

    What ``finetune --compile`` and ``pretrain --compile`` do. It is meant for CUDA, where
    a step of a small model is bound by launching its operators one at a time. On the
    CPU it is slower: a ``small`` pretraining step on 64 ZINC molecules (2 threads)
    took 115-122 ms compiled against 94-105 ms eager, after 10 s of compilation
    (``benchmarks/README.md``).

    Examples:
        >>> from pyg_molblend.models import MoleBlend
        >>> model = compile_layers(MoleBlend.from_preset("small"))
        >>> sorted(model.state_dict()) == sorted(MoleBlend.from_preset("small").state_dict())
        True
    """
    for layer in model.layers:  # type: ignore[union-attr]
        layer.compile(dynamic=True, backend=COMPILE_BACKEND)
    return model


def clip_gradients(optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """:func:`torch.nn.utils.clip_grad_norm_` over the parameters :obj:`optimizer` updates
    (those without a gradient are skipped); returns the total norm before clipping.

    Read from the optimizer's list instead of ``model.parameters()``, whose walk over the
    modules cost about 0.2 ms a training step on the CPU (782 against 567 us a call for
    the ``small`` predictor, 2 threads).

    Examples:
        >>> layer = torch.nn.Linear(2, 1)
        >>> optimizer = make_optimizer(layer.parameters(), 1e-3, 0.0)
        >>> layer(torch.tensor([[3.0, 4.0]])).sum().backward()  # grads [3, 4] and [1]
        >>> norm = clip_gradients(optimizer, 1.0)  # sqrt(26) before, 1 after
        >>> round(float(norm), 4), round(layer.weight.grad.norm().item(), 4)
        (5.099, 0.9806)
    """
    params = [param for group in optimizer.param_groups for param in group["params"]]
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


def check_finite_step(
    loss: torch.Tensor, grad_norm: torch.Tensor, step: int, lr: float, kept: str
) -> tuple[float, float]:
    """The loss and gradient norm of a training step as floats, or a :class:`ValueError`
    when either is NaN or infinite (checked before the optimizer step, so the weights
    never take a non-finite update).

    Args:
        kept (str): what the user keeps, for the message (the last checkpoint, say).

    Examples:
        >>> check_finite_step(torch.tensor(0.5), torch.tensor(2.0), step=1, lr=1e-3, kept="x")
        (0.5, 2.0)
    """
    loss_value, grad_value = loss.item(), grad_norm.item()
    _check_finite(loss_value, grad_value, step, lr, kept)
    return loss_value, grad_value


def _check_finite(loss: float, grad_norm: float, step: int, lr: float, kept: str) -> None:
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        raise ValueError(
            f"Training diverged at step {step}: loss {loss}, gradient norm "
            f"{grad_norm} at learning rate {lr:.3g}. Lower the learning rate (lr); {kept}"
        )


class FiniteGuard:
    """Stops training on a non-finite loss or gradient norm before it reaches the weights.

    On the CPU every step is checked at once (:func:`check_finite_step`). On an
    accelerator that check would stall the device once per step, so the fused
    optimizer is handed a ``found_inf`` flag instead and skips a non-finite step by
    itself; the first such step is remembered on the device and :meth:`flush` (called
    where the host reads results anyway: end of an epoch, before a checkpoint or a log
    line) raises the same :class:`ValueError` naming it.

    Examples:
        >>> optimizer = make_optimizer(torch.nn.Linear(1, 1).parameters(), 1e-3, 0.0)
        >>> guard = FiniteGuard(optimizer, "cpu")
        >>> try:
        ...     guard.check(torch.tensor(float("nan")), torch.tensor(1.0), 7, 1e-3, "nothing saved")
        ... except ValueError as error:
        ...     print(str(error)[:35])
        Training diverged at step 7: loss n
    """

    def __init__(self, optimizer: torch.optim.Optimizer, device: str | torch.device) -> None:
        self.optimizer = optimizer
        self.deferred = torch.device(device).type != "cpu"
        self.first: torch.Tensor | None = None  # [step, loss, grad_norm, lr]; step -1 = none

    def check(
        self, loss: torch.Tensor, grad_norm: torch.Tensor, step: int, lr: float, kept: str
    ) -> None:
        """Call after gradient clipping and before ``optimizer.step()``."""
        self.kept = kept
        if not self.deferred:
            check_finite_step(loss, grad_norm, step, lr, kept)
            return
        loss, grad_norm = loss.detach().float(), grad_norm.detach().float()
        bad = ~(torch.isfinite(loss) & torch.isfinite(grad_norm))
        self.optimizer.found_inf = bad.float()
        # torch.full, not new_tensor: a fill kernel instead of a synchronous host copy.
        row = torch.stack([torch.full_like(loss, step), loss, grad_norm, torch.full_like(loss, lr)])
        if self.first is None:
            self.first = torch.full_like(row, -1.0)
        keep = (self.first[0] >= 0) | ~bad
        self.first = torch.where(keep, self.first, row)

    def flush(self) -> None:
        """Raise for the first non-finite step since the start, if any (a host sync)."""
        if self.first is None:
            return
        step, loss, grad_norm, lr = self.first.tolist()
        if step >= 0:
            _check_finite(loss, grad_norm, int(step), lr, self.kept)


def dense_batch(batch: Batch, device: str | torch.device, max_hops: int) -> DenseMolBatch:
    """The :class:`~pyg_molblend.data.DenseMolBatch` of a loader's batch on :obj:`device`.

    Stored pair fields are densified where the batch is (the host: index work whose
    sizes the host knows, so nothing waits on the device) and copied over
    asynchronously; a batch without them goes to the device first, so that the
    shortest-path kernel runs there.

    Examples:
        >>> from torch_geometric.data import Batch
        >>> from pyg_molblend.data import from_smiles
        >>> dense = dense_batch(Batch.from_data_list([from_smiles("CCO")]), "cpu", max_hops=5)
        >>> dense.path_edge.shape
        torch.Size([1, 3, 3, 5])
    """
    if getattr(batch, "spd", None) is None or getattr(batch, "path_edge", None) is None:
        return to_dense(batch.to(device, non_blocking=True), max_hops=max_hops)
    return to_dense(batch, max_hops=max_hops).to(device, non_blocking=True)


def pin_memory_for(device: str | torch.device) -> bool:
    """Pinned host memory for batches bound to a CUDA device (asynchronous copies).

    Examples:
        >>> pin_memory_for("cpu"), pin_memory_for("cuda:0")
        (False, True)
    """
    return torch.device(device).type == "cuda"


#: Arithmetic of training and inference (``--precision``): ``"fp32"`` everywhere (the
#: default); ``"tf32"``, CUDA matrix products on TF32 tensor cores (10-bit mantissa
#: inputs, fp32 accumulation; the rest fp32); ``"bf16"``, :func:`torch.autocast` to
#: bfloat16 (products and attention in bf16, normalisation, softmax-based losses and the
#: weights in fp32).
PRECISIONS = ("fp32", "tf32", "bf16")


_bf16_warned = False


def cpu_has_bf16_kernels() -> bool:
    """Whether torch has bf16 matrix-product kernels for this CPU (oneDNN's check: AVX-512
    or newer). Without them (an AVX2 CPU) bf16 autocast falls back to slow generic code:
    on an AVX2 AMD EPYC an ESOL fine-tuning epoch took 11.4 s in bf16 against 1.0 s in
    fp32. :obj:`True` where torch cannot say (nothing is then reported)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def check_precision(precision: str, device: str | torch.device) -> None:
    """Refuse a precision that is not one of :data:`PRECISIONS` or that the device cannot
    run (TF32 is a CUDA mode); warn (once) when ``"bf16"`` is asked of a CPU
    without bf16 kernels (:func:`cpu_has_bf16_kernels`), where it runs about 10x slower
    than ``"fp32"``.

    Examples:
        >>> check_precision("bf16", "cpu")
        >>> try:
        ...     check_precision("tf32", "cpu")
        ... except ValueError as error:
        ...     print(str(error)[:72])
        precision 'tf32' is a mode of CUDA matrix products, not available on dev
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "tf32" and torch.device(device).type != "cuda":
        raise ValueError(
            f"precision 'tf32' is a mode of CUDA matrix products, not available on device "
            f"{str(device)!r}; use 'fp32' or 'bf16' there"
        )
    global _bf16_warned
    # Cheapest test first: precision_scope calls this once per training step.
    if (
        precision == "bf16"
        and not _bf16_warned
        and torch.device(device).type == "cpu"
        and not cpu_has_bf16_kernels()
    ):
        _bf16_warned = True  # once per process (warnings' own registry is reset by filters)
        warnings.warn(
            f"precision 'bf16': torch has no bf16 matrix kernels for this CPU (instruction "
            f"set {torch.backends.cpu.get_cpu_capability()}), so it runs about 10x slower "
            "than 'fp32' here (an ESOL fine-tuning epoch on an AVX2 CPU: 11.4 s against "
            "1.0 s); use precision 'fp32'",
            UserWarning,
            stacklevel=2,
        )


def _cpu_vendor() -> str | None:
    """The CPU's vendor string (``"AuthenticAMD"``, ``"GenuineIntel"``) on Linux,
    :obj:`None` where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _onednn_switch_available() -> bool:
    """Whether this torch has ``torch.backends.mkldnn.matmul.fp32_precision`` (newer than
    the package's oldest supported torch)."""
    return hasattr(getattr(torch.backends.mkldnn, "matmul", None), "fp32_precision")


@contextlib.contextmanager
def _onednn_matmul_flag() -> Iterator[None]:
    # torch's switch that sends float32 mm/addmm/bmm/baddbmm to oneDNN (with more than
    # 16 ** 3 multiply-adds) instead of the BLAS; named for the bf16 arithmetic it allows,
    # which oneDNN takes where it has a bf16 kernel for float32 inputs (AMX CPUs); on an
    # AVX-512 AMD EPYC it ran its float32 kernel (brg_matmul:avx512_core). The probe below
    # checks which, rather than trusting either.
    matmul = torch.backends.mkldnn.matmul
    previous = matmul.fp32_precision
    matmul.fp32_precision = "bf16"
    try:
        yield
    finally:
        matmul.fp32_precision = previous


def _onednn_matmul_exact() -> bool:
    """Whether oneDNN computes float32 products in float32 here: inputs of
    ``1 + 2 ** -12``, which bf16 rounds to 1, must give their exact sums (every partial sum
    is a multiple of ``2 ** -12`` below ``2 ** 12``, exact in float32 in any order), in
    each product the model uses and in each operand layout its backward pass does."""
    k, value = 128, 1.0 + 2.0**-12
    a, b = torch.full((512, k), value), torch.ones(k, 64)
    with _onednn_matmul_flag(), torch.no_grad():
        products = (
            torch.mm(a, b),
            torch.addmm(torch.zeros(64), a, b),
            torch.mm(b.t(), a.t()).t(),
            torch.bmm(a.view(8, 64, k), b.expand(8, k, 64)),
            torch.baddbmm(torch.zeros(8, 64, 64), a.view(8, 64, k), b.expand(8, k, 64)),
        )
    return all(bool((product == k * value).all()) for product in products)


@functools.cache
def onednn_fp32_matmul() -> bool:
    """Whether :func:`precision_scope` sends this CPU's float32 matrix products to oneDNN
    in ``"fp32"``: torch's BLAS, MKL, takes its AVX2 code on CPUs not made by Intel,
    where oneDNN uses AVX-512 and measures 2x faster on a product alone (an AMD EPYC with
    AVX-512, 2 threads: ``[1344, 128] x [128, 128]`` in 112 against 224 us).

    :obj:`True` on an x86-64 CPU not made by Intel, with torch built with MKL and oneDNN
    and offering ``torch.backends.mkldnn.matmul.fp32_precision``, where a product of
    inputs that bf16 cannot hold comes out exact through oneDNN (the arithmetic stays
    float32); :obj:`False` otherwise, and on Intel CPUs, whose MKL kernels are already
    their fastest (and where oneDNN could compute in bf16 on AMX). Checked once per
    process."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    if not (torch.backends.mkl.is_available() and torch.backends.mkldnn.is_available()):
        return False
    if not _onednn_switch_available():
        return False  # torch before the per-backend precision switch: leave the BLAS alone
    vendor = _cpu_vendor()
    if vendor is None or vendor == "GenuineIntel":
        return False
    return _onednn_matmul_exact()


@contextlib.contextmanager
def precision_scope(precision: str, device: str | torch.device) -> Iterator[None]:
    """Matrix products in :obj:`precision` within the scope, forward and backward; wrap a
    whole loop in it, and each forward pass in :func:`autocast`. ``"tf32"``: TF32 on
    CUDA. ``"fp32"`` on a CPU where :func:`onednn_fp32_matmul` holds: float32 products
    through oneDNN instead of MKL, still in float32 arithmetic. torch's global flags are
    restored on exit.

    oneDNN sets up each new product shape once per process (about 0.3 ms), then runs it
    faster the larger it is (an AMD EPYC with AVX-512, 2 threads): ``small`` pretraining
    1.16-1.35x, ``base`` pretraining 1.58x and ``base`` fine-tuning on ESOL 1.78x; a
    ``small`` model's fine-tuning epochs and predictions (batches of 32 small molecules)
    are level, and a 3-epoch ESOL run takes about 0.35 s longer for the setup.

    Examples:
        >>> with precision_scope("fp32", "cpu"):
        ...     torch.backends.cuda.matmul.allow_tf32
        False
    """
    check_precision(precision, device)
    if precision == "fp32" and torch.device(device).type == "cpu" and onednn_fp32_matmul():
        with _onednn_matmul_flag():
            yield
        return
    if precision != "tf32":
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def autocast(precision: str, device: str | torch.device) -> torch.autocast:
    """:func:`torch.autocast` to bfloat16 on :obj:`device` for ``"bf16"``, disabled
    otherwise: wrap the forward pass and the loss, not the backward pass.

    Examples:
        >>> layer = torch.nn.Linear(4, 2)
        >>> with autocast("bf16", "cpu"):
        ...     layer(torch.ones(1, 4)).dtype
        torch.bfloat16
        >>> with autocast("fp32", "cpu"):
        ...     layer(torch.ones(1, 4)).dtype
        torch.float32
    """
    return torch.autocast(torch.device(device).type, torch.bfloat16, enabled=precision == "bf16")
