"""Benchmark of one MoleBLEND pretraining step against a naive dense version of the same math.

A step is ``model.train()``, ``loss = model.pretrain_loss(batch, "blend").loss``,
``loss.backward()`` on real molecules with RDKit 3D coordinates (``AddConformer(seed=0)``).
The *naive* model has the same parameters and differs only in how three parts are
evaluated, written here as the reference implementation does them:

(i)   attention in every layer: explicit ``softmax(QK^T / sqrt(d) + bias) V`` with the
      ``[B, H, N, N]`` logits and probabilities materialised (no
      ``scaled_dot_product_attention``);
(ii)  pair heads: the outer product ``o_ij = flatten(r_i (x) c_j)`` ``[B, N, N, m*m]`` is
      materialised and the Linear applied to it (instead of the bilinear form), and the
      SPD and edge losses score all ``[B, N, N, 80]`` edge logits in one call (instead of
      ``PairHead.cross_entropy``'s one hop at a time; 300 before the factored edge head);
(iii) edge-path bias: bond features embedded per (pair, hop), ``[B, N, N, K, 3, H]``, then
      mean over the 3 features and a per-hop ``[H, H]`` matmul (instead of projecting once
      per bond and gathering);
(iv)  the Gaussian basis of 3D distances as Transformer-M's ``gaussian`` writes it,
      ``exp(-0.5 ((x - mean) / std)^2) / (sqrt(2 pi) std)`` (instead of the fused
      ``exp(-z^2 / 2 - log(sqrt(2 pi) std))``: half the passes over ``[B, N, N, K]``).

Each (preset, variant) runs in a fresh subprocess so that its peak memory is its own. CPU
memory is the peak resident set size over the warm-up and timed steps (``VmHWM``, reset by
``echo 5 > /proc/self/clear_refs`` once the model, the data and the dense batches are built)
minus the resident set size at that point (``ru_maxrss`` where /proc cannot be used); CUDA
memory is ``torch.cuda.max_memory_allocated`` over the steps. Batches are densified with
``to_dense`` before timing (``benchmarks/shortest_path.py`` measures that part), so a step
is the model math only. Targets are informational: the exit status is 0 unless the naive
and optimised losses disagree.

Usage::

    python benchmarks/model_step.py [--csv PATH] [--threads 1] [--presets small base]
    python benchmarks/model_step.py --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import environment, load_molecules, resolve_csv, synchronize, table, verdict
from torch import Tensor

from pyg_molblend.models import MoleBlend
from pyg_molblend.nn import (
    BlendedGraphTransformer,
    EdgePathBias,
    GaussianDistanceBias,
    PairHead,
)

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
THROUGHPUT_TARGET = 1.5  # optimised / naive molecules per second, preset "base"
MEMORY_TARGET = 0.7  # optimised / naive peak memory, preset "base"


# ---------------------------------------------------------------------- naive variants
def naive_attention(
    self: BlendedGraphTransformer,
    x: Tensor,
    attn_bias: Tensor,
    mask: Tensor,
    num_queries: int | None = None,
):
    """(i) ``softmax(QK^T / sqrt(d) + bias) V`` with explicit logits (every position asks;
    with ``num_queries`` the first rows of the result are kept, as the layer expects)."""
    batch, num_nodes, _ = x.shape
    head_dim = self.channels // self.heads

    def split(t: Tensor) -> Tensor:
        return t.view(batch, num_nodes, self.heads, head_dim).transpose(1, 2)

    q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
    key_mask = mask | ~mask.any(-1, keepdim=True)
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(head_dim) + attn_bias.to(q.dtype)
    logits = logits.masked_fill(~key_mask.view(batch, 1, 1, num_nodes), float("-inf"))
    prob = torch.softmax(logits, dim=-1)
    prob = F.dropout(prob, p=self.attn_dropout, training=self.training)
    out = (prob @ v)[:, :, :num_queries]
    return self.out_proj(out.transpose(1, 2).reshape(batch, out.size(2), self.channels))


def naive_pair_head(self: PairHead, x: Tensor) -> Tensor:
    """(ii) ``Linear(flatten(r_i (x) c_j))`` with the ``[B, N, N, m*m]`` outer product."""
    row, col = self.factors(x)
    outer = (row.unsqueeze(2).unsqueeze(-1) * col.unsqueeze(1).unsqueeze(-2)).flatten(-2)
    return self.head(outer)


def naive_pair_cross_entropy(
    self: PairHead, x: Tensor, labels: Tensor, num_classes: int | tuple[int, ...]
) -> tuple[Tensor | None, Tensor | None]:
    """(ii) for the SPD and edge losses: all logits of the materialised head at once,
    then one ``cross_entropy`` over every (pair, group) row per softmax, as the reference
    scores them (the factored edge head's two parts side by side in each group)."""
    sizes = (num_classes,) if isinstance(num_classes, int) else num_classes
    width = sum(sizes)
    target = labels.reshape(-1, len(sizes))
    count = (target[:, 0] != -100).sum()
    if not bool(count):
        return None, None
    logits = naive_pair_head(self, x)[..., : labels.size(3) * width].reshape(-1, width)
    loss, correct, start = 0.0, target[:, 0] != -100, 0
    for part, size in enumerate(sizes):
        scores = logits[:, start : start + size].float()
        loss = loss + F.cross_entropy(scores, target[:, part], ignore_index=-100, reduction="sum")
        correct = correct & (scores.detach().argmax(-1) == target[:, part])
        start += size
    return loss / count, correct.sum() / count


def naive_edge_bias(self: EdgePathBias, path_edge: Tensor, edge_attr: Tensor, spd: Tensor):
    """(iii) the reference's multi-hop edge encoding: embed the 3 features of the bond at
    every (pair, hop), ``[B, N, N, K, 3, H]``, mean, per-hop ``[H, H]`` bmm, sum / spd."""
    batch, num_nodes, _, num_hops = path_edge.shape
    has_bond = (path_edge >= 0).unsqueeze(-1)
    edge_input = edge_attr[path_edge.clamp(min=0)]  # [B, N, N, K, 3], the reference input
    index = (edge_input + self.edge.offset).masked_fill(~has_bond, 0)  # row 0 = none
    emb = self.edge.table(index).mean(-2)  # [B, N, N, K, H]
    flat = emb.permute(3, 0, 1, 2, 4).reshape(num_hops, -1, self.heads)
    flat = torch.bmm(flat, self.hop_weight[:num_hops].to(flat.dtype))
    out = flat.reshape(num_hops, batch, num_nodes, num_nodes, self.heads).sum(0)
    scale = spd.clamp(min=1, max=max(num_hops, 1)).to(out.dtype).unsqueeze(-1)
    return (out / scale).permute(0, 3, 1, 2)


def naive_basis(self: GaussianDistanceBias, dist: Tensor, atom_type: Tensor) -> Tensor:
    """(iv) the reference's Gaussian basis: six elementwise passes over ``[B, N, N, K]``."""
    x = self.scaled_distance(dist, atom_type)
    std = self.std.abs() + 0.01
    return torch.exp(-0.5 * ((x - self.mean) / std) ** 2) / (math.sqrt(2 * math.pi) * std)


def make_naive(model: MoleBlend) -> MoleBlend:
    """Patch ``model`` in place (same parameters) to evaluate (i)-(iv) naively."""
    for module in model.modules():
        if isinstance(module, BlendedGraphTransformer):
            module.attention = types.MethodType(naive_attention, module)
        elif isinstance(module, PairHead):
            module.forward = types.MethodType(naive_pair_head, module)
            module.cross_entropy = types.MethodType(naive_pair_cross_entropy, module)
        elif isinstance(module, EdgePathBias):
            module.forward = types.MethodType(naive_edge_bias, module)
        elif isinstance(module, GaussianDistanceBias):
            module.basis = types.MethodType(naive_basis, module)
    return model


# ---------------------------------------------------------------------- data
def prepare(args: argparse.Namespace, directory: Path) -> tuple[Path, list[str]]:
    """Featurize, shuffle (seeded) and embed conformers until ``--num-molecules`` have 3D;
    saved with torch.save for the worker processes."""
    from rdkit import RDLogger

    from pyg_molblend.transforms import AddConformer

    data, notes = load_molecules(resolve_csv(args.csv))
    random.Random(args.seed).shuffle(data)
    # After from_smiles (whose quiet_rdkit re-enables the log): RemoveHs in AddConformer
    # warns "not removing hydrogen atom without neighbors" on [H+] salts.
    RDLogger.DisableLog("rdApp.*")
    conformer = AddConformer(seed=0)
    chosen, failed, too_large = [], 0, 0
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for item in data:
            if len(chosen) >= args.num_molecules:
                break
            if item.num_nodes > args.max_atoms:
                too_large += 1
                continue
            item = conformer(item)
            if bool(item.has_pos.all()):
                chosen.append(item)
            else:
                failed += 1
    notes.append(
        f"AddConformer(seed=0): {len(chosen)} molecules with 3D in "
        f"{time.perf_counter() - start:.1f} s (shuffled with seed {args.seed}; skipped: "
        f"{too_large} with more than {args.max_atoms} heavy atoms, {failed} embedding failures)"
    )
    path = directory / "molecules.pt"
    torch.save(chosen, path)
    return path, notes


def dense_batches(path: Path, batch_size: int, device: str) -> list:
    from torch_geometric.loader import DataLoader

    from pyg_molblend.data import to_dense

    data = torch.load(path, weights_only=False)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, drop_last=True)
    return [to_dense(b).to(device) for b in loader]


def build_model(preset: str, seed: int, device: str) -> MoleBlend:
    torch.manual_seed(seed)
    return MoleBlend.from_preset(preset).to(device)


def autocast(device: str, dtype_name: str):
    dtype = DTYPES[dtype_name]
    if dtype is None:
        return torch.autocast(device_type=device.split(":")[0], enabled=False)
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


# ---------------------------------------------------------------------- worker
def rss_peak_bytes() -> int:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def proc_status() -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS of this process image) in bytes, from /proc."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def reset_peak_rss() -> tuple[str, int]:
    """Start a peak-RSS measurement; returns the method and the baseline in bytes.

    Preferred: reset the kernel's RSS high-water mark (``echo 5 > /proc/self/clear_refs``)
    and read ``VmHWM`` later. Fallback: ``ru_maxrss``, which on Linux also carries the
    parent's RSS at fork/exec time over into the child, so it can only over-state the
    baseline (the peak increase is then a lower bound)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "vmhwm", proc_status()["VmRSS"]
    except OSError:
        return "ru_maxrss", rss_peak_bytes()


def peak_rss(method: str) -> int:
    return proc_status()["VmHWM"] if method == "vmhwm" else rss_peak_bytes()


def worker(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    device = spec["device"]
    batches = dense_batches(Path(spec["data"]), spec["batch_size"], device)
    model = build_model(spec["preset"], spec["seed"], device)
    if spec["variant"] == "naive":
        make_naive(model)
    model.train()
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        method, base = reset_peak_rss()

    times = []
    num_steps = spec["warmup"] + spec["steps"]
    for step in range(num_steps):
        dense = batches[step % len(batches)]
        torch.manual_seed(spec["seed"] + step)  # dropout / drop-path RNG seeded per step
        generator = torch.Generator(device=device).manual_seed(spec["seed"] + step)
        model.zero_grad(set_to_none=True)
        synchronize(device)
        start = time.perf_counter()
        with autocast(device, spec["dtype"]):
            loss = model.pretrain_loss(dense, mode="blend", generator=generator).loss
        loss.backward()
        synchronize(device)
        times.append(time.perf_counter() - start)
        if not math.isfinite(float(loss)):
            raise RuntimeError(f"non-finite loss {float(loss)} at step {step}")
    timed = times[spec["warmup"] :]
    result = dict(
        step_s=sum(timed) / len(timed),
        step_min_s=min(timed),
        molecules=spec["batch_size"] * len(timed),
        seconds=sum(timed),
        atoms_padded=[int(b.max_num_nodes) for b in batches],
        num_params=sum(p.numel() for p in model.parameters()),
    )
    if device.startswith("cuda"):
        result.update(
            peak_bytes=torch.cuda.max_memory_allocated() - base,
            base_bytes=base,
            method="cuda",
        )
    else:
        peak = peak_rss(method)
        result.update(peak_bytes=peak - base, base_bytes=base, abs_peak_bytes=peak, method=method)
    return result


def run_worker(spec: dict) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"worker {spec['preset']}/{spec['variant']} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- equivalence
def check_equivalence(preset: str, path: Path, batch_size: int, args) -> tuple[float, float]:
    """Relative |loss difference| and max relative gradient difference, naive vs optimised,
    same parameters, same generator seed, ``model.eval()`` (no dropout), fp32."""
    torch.set_num_threads(args.threads)
    dense = dense_batches(path, batch_size, args.device)[0]
    model = build_model(preset, args.seed, args.device).eval()
    naive = make_naive(copy.deepcopy(model)).eval()
    results = []
    for m in (model, naive):
        generator = torch.Generator(device=args.device).manual_seed(args.seed)
        loss = m.pretrain_loss(dense, mode="blend", generator=generator).loss
        loss.backward()
        grads = [p.grad for p in m.parameters()]
        results.append((loss.detach(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    rel_loss = float((loss_a - loss_b).abs() / loss_a.abs().clamp(min=1e-12))
    if any((ga is None) != (gb is None) for ga, gb in zip(grads_a, grads_b, strict=True)):
        return rel_loss, float("inf")
    pairs = [(ga, gb) for ga, gb in zip(grads_a, grads_b, strict=True) if ga is not None]
    diff = torch.sqrt(sum(((ga - gb) ** 2).sum() for ga, gb in pairs))
    norm = torch.sqrt(sum((ga**2).sum() for ga, _ in pairs))
    rel_grad = float(diff / norm.clamp(min=1e-30))
    print(
        f"check [{preset}]: loss optimised {float(loss_a):.6f}, naive {float(loss_b):.6f}, "
        f"relative difference {rel_loss:.1e}; gradients ||g_naive - g_opt|| / ||g_opt|| "
        f"(all parameters) {rel_grad:.1e}  (eval mode, fp32, one batch of {batch_size}, "
        "same generator seed)"
    )
    return rel_loss, rel_grad


# ---------------------------------------------------------------------- main
def mib(x: float) -> str:
    return f"{x / 2**20:,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--csv",
        default=None,
        help="CSV with a 'smiles' column "
        "(default: /work/shared/data/moleculenet/BBBP.csv, else "
        "tests/assets/molecules.csv)",
    )
    parser.add_argument("--presets", nargs="+", default=["small", "base"])
    parser.add_argument(
        "--num-molecules",
        type=int,
        default=128,
        help="molecules with conformers (shuffled with --seed)",
    )
    parser.add_argument(
        "--max-atoms",
        type=int,
        default=50,
        help="skip molecules with more heavy atoms (bounds the padded N)",
    )
    parser.add_argument("--batch-size-small", type=int, default=64)
    parser.add_argument("--batch-size-base", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="fp32",
        help="autocast dtype of the timed steps (the check is always fp32)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest relative loss difference naive vs optimised",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    print("pyg_molblend pretraining-step benchmark: optimised vs naive dense")
    print(environment())
    print(
        f"device {args.device}, dtype {args.dtype}, torch threads {args.threads}, "
        f"{args.warmup} warm-up + {args.steps} timed steps per (preset, variant), each in "
        f"a fresh subprocess"
    )
    sizes = {"small": args.batch_size_small, "base": args.batch_size_base}
    with tempfile.TemporaryDirectory(prefix="molblend_bench_") as tmp:
        path, notes = prepare(args, Path(tmp))
        for note in notes:
            print("  " + note)
        print()
        failed = False
        rows, summary, results = [], [], {}
        for preset in args.presets:
            batch_size = sizes.get(preset, args.batch_size_base)
            rel_loss, _ = check_equivalence(preset, path, batch_size, args)
            if not rel_loss <= args.tolerance:
                print(
                    f"MISMATCH [{preset}]: naive and optimised losses differ by "
                    f"{rel_loss:.1e} > {args.tolerance:.0e}",
                    file=sys.stderr,
                )
                failed = True
            for variant in ("optimised", "naive"):
                spec = dict(
                    preset=preset,
                    variant=variant,
                    data=str(path),
                    batch_size=batch_size,
                    warmup=args.warmup,
                    steps=args.steps,
                    threads=args.threads,
                    device=args.device,
                    dtype=args.dtype,
                    seed=args.seed,
                )
                results[preset, variant] = run_worker(spec)
            opt, nai = results[preset, "optimised"], results[preset, "naive"]
            speed = (opt["molecules"] / opt["seconds"]) / (nai["molecules"] / nai["seconds"])
            memory = opt["peak_bytes"] / max(nai["peak_bytes"], 1)
            for variant, r in (("optimised", opt), ("naive", nai)):
                rows.append(
                    [
                        preset,
                        variant,
                        str(batch_size),
                        "/".join(str(n) for n in r["atoms_padded"]),
                        f"{r['num_params'] / 1e6:.1f}M",
                        f"{1e3 * r['step_s']:,.0f} (min {1e3 * r['step_min_s']:,.0f})",
                        f"{r['molecules'] / r['seconds']:.1f}",
                        mib(r["peak_bytes"]),
                        mib(r.get("abs_peak_bytes", r["peak_bytes"] + r["base_bytes"])),
                        f"{speed:.2f}x" if variant == "optimised" else "1.00x",
                        f"{memory:.2f}x" if variant == "optimised" else "1.00x",
                    ]
                )
            if preset == "base":
                summary += [
                    [
                        "base: throughput optimised / naive",
                        f"{speed:.2f}x",
                        f">= {THROUGHPUT_TARGET}x",
                        verdict(speed >= THROUGHPUT_TARGET),
                    ],
                    [
                        "base: peak memory optimised / naive",
                        f"{memory:.2f}x",
                        f"<= {MEMORY_TARGET}x",
                        verdict(memory <= MEMORY_TARGET),
                    ],
                ]
            else:
                summary += [
                    [f"{preset} (info): throughput optimised / naive", f"{speed:.2f}x", "-", "-"],
                    [f"{preset} (info): peak memory optimised / naive", f"{memory:.2f}x", "-", "-"],
                ]
    mem_label = "peak MiB over base" if args.device == "cpu" else "peak CUDA MiB"
    print()
    print(
        table(
            [
                "preset",
                "variant",
                "batch",
                "padded atoms per batch",
                "params",
                "ms/step",
                "molecules/s",
                mem_label,
                "peak RSS MiB" if args.device == "cpu" else "peak abs MiB",
                "speed vs naive",
                "memory vs naive",
            ],
            rows,
            align="llrlrrrrrrr",
            title="Pretraining step (forward + backward of pretrain_loss, mode 'blend', train())",
        )
    )
    methods = {r["method"] for r in results.values()}
    grads = ", ".join(
        f"{preset} {mib(4 * results[preset, 'optimised']['num_params'])} MiB"
        for preset in args.presets
    )
    if args.device == "cpu":
        how = (
            "the kernel's RSS high-water mark is reset (echo 5 > /proc/self/clear_refs) once "
            "model + dense batches are built; 'peak MiB over base' = VmHWM after the steps "
            "- VmRSS at that reset"
            if methods == {"vmhwm"}
            else "'peak MiB over base' = ru_maxrss after the steps - ru_maxrss once model + "
            "dense batches are built (/proc/self/clear_refs unavailable; ru_maxrss inherits "
            "the parent's RSS, so this is a lower bound)"
        )
        print(
            f"    memory: each variant runs in its own fresh process; {how}. It covers "
            f"activations, temporaries and the fp32 gradient buffers, which are the same in "
            f"both variants ({grads}). 'peak RSS MiB' = absolute peak RSS of the process."
        )
    else:
        print(
            "    memory: torch.cuda.max_memory_allocated() over the steps minus the "
            "allocation once model + batches were built."
        )
    print(
        "    ms/step: mean of the timed steps (min in brackets; the batches differ in padded "
        "size, so the spread is not only noise); molecules/s = timed molecules / timed "
        "seconds; both variants run the same batches and seeds."
    )
    print()
    print(
        table(["target", "measured", "goal", "verdict"], summary, title="Summary (informational)")
    )
    if failed:
        print(
            "naive and optimised losses disagree: the comparison above is not valid",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
