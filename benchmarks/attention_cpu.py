"""The CPU attention of ``BlendedGraphTransformer`` against what it replaced, op by op.

Two measured CPU costs shape :func:`pyg_molblend.nn.layer.cpu_attention` (issue 11):

(a) torch's CPU softmax and its backward over a last dimension shorter than the float
    vector width (16 with AVX-512) take a scalar path; :func:`pad_softmax_rows` pads such
    rows with ``-inf``. Timed: softmax forward + backward of ``[B, H, N, N]`` as it is and
    padded to 16 (the padding's own copy included).
(b) :func:`torch.nn.functional.scaled_dot_product_attention` on the CPU against the explicit
    products of ``cpu_attention``, in inference (no dropout, what ``predict`` runs) and in
    training (forward + backward, attention dropout 0.1; the old training route was the
    explicit products without padding).

Every route is first checked to give the same output as SDPA (a mismatch exits with
status 1). Timings are the median of ``--repeats`` runs after a warm-up; ratios above 1
mean the new route is faster. Nothing is asserted on timings: the exit status is 0 otherwise.

Usage::

    python benchmarks/attention_cpu.py [--batch 32] [--heads 8] [--head-dim 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _common import environment, table

from pyg_molblend.nn.dropout import dropout
from pyg_molblend.nn.layer import (
    MIN_SOFTMAX_WIDTH,
    cpu_attention,
    key_padding_bias,
    pad_softmax_rows,
)


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median microseconds of ``repeats`` calls after two warm-up calls."""
    fn(), fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def unpadded_explicit(q, k, v, bias, keys, p: float, training: bool):
    """The training route before: explicit products, no padding."""
    logits = torch.matmul(q * q.size(-1) ** -0.5, k.transpose(-1, -2))
    logits = logits + bias + key_padding_bias(keys, q.dtype)
    return dropout(torch.softmax(logits, -1), p, training) @ v


def sdpa(q, k, v, bias, keys):
    """The inference route before."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias + key_padding_bias(keys))


def measure(n: int, args: argparse.Namespace) -> tuple[list | None, list | None]:
    """The table rows of atom count ``n``, or ``(None, None)`` after printing a mismatch."""
    shape = (args.batch, args.heads, n, args.head_dim)
    q, k, v = (torch.randn(shape) for _ in range(3))
    bias = torch.randn(args.batch, args.heads, n, n)
    keys = torch.ones(args.batch, n, dtype=torch.bool)
    keys[::2, n - n // 4 :] = False  # padded molecules
    expected = sdpa(q, k, v, bias, keys)
    old = unpadded_explicit(q, k, v, bias, keys, 0.0, False)
    for out in (cpu_attention(q, k, v, bias, keys), old):
        if not torch.allclose(out, expected, atol=1e-5):
            print(f"MISMATCH at N = {n}: {float((out - expected).abs().max())}")
            return None, None

    # (a) softmax forward + backward, as is and padded
    logits = torch.randn(args.batch, args.heads, n, n, requires_grad=True)
    grad = torch.randn(args.batch, args.heads, n, n)
    plain = timed(lambda: torch.softmax(logits, -1).backward(grad), args.repeats)
    padded = timed(
        lambda: torch.softmax(pad_softmax_rows(logits), -1)[..., :n].backward(grad),
        args.repeats,
    )
    row_a = [n, f"{plain:.0f}", f"{padded:.0f}", f"{plain / padded:.2f}x"]

    # (b) attention: inference and training routes, old and new
    with torch.no_grad():
        old_eval = timed(lambda: sdpa(q, k, v, bias, keys), args.repeats)
        new_eval = timed(lambda: cpu_attention(q, k, v, bias, keys), args.repeats)
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    grad_out = torch.randn(shape)
    old_train = timed(
        lambda: unpadded_explicit(qg, kg, vg, bias, keys, 0.1, True).backward(grad_out),
        args.repeats,
    )
    new_train = timed(
        lambda: cpu_attention(qg, kg, vg, bias, keys, 0.1, True).backward(grad_out),
        args.repeats,
    )
    row_b = [
        n,
        f"{old_eval:.0f}",
        f"{new_eval:.0f}",
        f"{old_eval / new_eval:.2f}x",
        f"{old_train:.0f}",
        f"{new_train:.0f}",
        f"{old_train / new_train:.2f}x",
    ]
    return row_a, row_b


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 12, 15, 16, 20, 24, 32, 48])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("CPU attention benchmark")
    print(environment())
    print(
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} threads, "
        f"[B, H, N, d] = [{args.batch}, {args.heads}, N, {args.head_dim}], median of "
        f"{args.repeats}"
    )
    torch.manual_seed(0)
    rows_a, rows_b = [], []
    for n in args.sizes:
        row_a, row_b = measure(n, args)
        if row_a is None:
            return 1
        rows_a.append(row_a)
        rows_b.append(row_b)
    print()
    print(
        table(
            ["N", "softmax fwd+bwd (us)", f"padded to {MIN_SOFTMAX_WIDTH} (us)", "speed-up"],
            rows_a,
            title="(a) softmax over rows of N, forward + backward",
        )
    )
    print()
    print(
        table(
            [
                "N",
                "SDPA (us)",
                "cpu_attention (us)",
                "speed-up",
                "old train (us)",
                "cpu_attention train (us)",
                "speed-up",
            ],
            rows_b,
            title="(b) attention, inference (old: SDPA) and training fwd+bwd (old: unpadded)",
        )
    )
    print("check: cpu_attention and the unpadded route equal SDPA at every N")
    return 0


if __name__ == "__main__":
    sys.exit(main())
