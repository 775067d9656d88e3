"""The numbers of the GPU targets, measured in a few minutes (``gpu_check.sh`` runs this
after ``tests/test_cuda.py``).

* Tox21 fine-tuning epoch: ``finetune`` from the shipped weights, defaults (batch 32,
  mode 2d, scaffold split), timed for 1 and for 3 epochs in one process after one
  warm-up epoch (one for all precisions); seconds per epoch = (t3 - t1) / 2 (each epoch
  includes its validation pass, as on the CPU). Target on an H100/H200: <= 1 s.
* Pretraining molecules/s: ``pretrain`` (mode blend) on molecules with RDKit conformers,
  ``small`` at batch 64 and ``base`` at batch 32, timed for S1 and S2 steps after an
  S1-step warm-up run (kernels loaded on first use, cuBLAS handles, the compilation);
  molecules/s = (S2 - S1) * batch / (t(S2) - t(S1)). Targets: ``small`` >= 10,000,
  ``base`` >= 1,500. ``small`` is also timed at batch 256 (fp32), to tell a step bound by
  launching its ~2,700 operators from one bound by arithmetic.

Each is measured in every ``--precision`` given (default: fp32 and bf16; ``tf32`` on
request), one after the other in the same process, so that the table says which
arithmetic meets a target. Then the Tox21 epoch and ``small`` pretraining are measured
again with the encoder's layers compiled (``--compile``,
:func:`~pyg_molblend.training.utils.compile_layers`: ``torch.compile``, dynamic shapes)
in the first precision, after a warm-up run that pays the compilation (its time is
printed); ``--no-compile`` leaves that out.

Data come from ``--data`` (``gpu_check.sh prepare`` copies them there: ``tox21.csv`` and
``zinc.csv.gz``), so nothing is downloaded. ``--device cpu --quick`` runs the same code
on a few molecules, to check the script itself where there is no GPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import torch
import torch_geometric.transforms as T

from pyg_molblend.data import scaffold_split
from pyg_molblend.datasets import MoleculeNet, SmilesDataset
from pyg_molblend.models import MoleBlend, MoleBlendPredictor
from pyg_molblend.training.checkpoint import load_encoder
from pyg_molblend.training.finetune import FinetuneConfig, finetune
from pyg_molblend.training.pretrain import PretrainConfig, pretrain
from pyg_molblend.training.utils import PRECISIONS, seed_everything
from pyg_molblend.transforms import AddConformer, AddShortestPath

TARGETS = {
    "tox21 s/epoch": 1.0,
    "small mol/s": 10_000.0,
    "small mol/s, batch 256": 10_000.0,  # (batch 128 with --quick: 200 molecules)
    "base mol/s": 1_500.0,
    "tox21 s/epoch, compiled": 1.0,
    "small mol/s, compiled": 10_000.0,
}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def tox21_epoch(
    data: Path, work: Path, device: str, quick: bool, precisions: list[str], compile: bool = False
) -> dict[str, float]:
    raw = work / "tox21" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    shutil.copy(data / "tox21.csv", raw / "tox21.csv")
    started = time.perf_counter()
    dataset = MoleculeNet(str(work), "tox21", pre_transform=AddShortestPath(), skip_invalid=True)
    if quick:
        dataset = dataset[:300]
    print(f"tox21: {len(dataset)} molecules prepared in {time.perf_counter() - started:.0f} s")
    train, valid, test = (dataset[p] for p in scaffold_split(dataset.smiles))
    label = ", compiled" if compile else ""

    def run(epochs: int, precision: str) -> float:
        seed_everything(0)
        encoder = load_encoder("pretrained", activation_dropout=0.0, drop_path=0.0)
        predictor = MoleBlendPredictor(encoder, dataset.num_tasks, dataset.task_type, "2d")
        config = FinetuneConfig(
            epochs=epochs,
            lr=3e-4,
            device=device,
            precision=precision,
            compile=compile,
            progress=False,
        )
        sync(device)
        start = time.perf_counter()
        result = finetune(predictor, train, valid, test, config)
        sync(device)
        seconds = time.perf_counter() - start
        print(f"  {precision}{label}, {epochs} epoch(s): {seconds:.2f} s, test {result.test}")
        return seconds

    if compile:  # each compiled measure starts with empty caches: dynamo keeps at most 8
        torch._dynamo.reset()  # graphs of a function, and fine-tuning alone makes up to 8
    run(1, precisions[0])  # warm-up: kernels, allocator, caches (and the compilation)
    seconds = {}
    for precision in precisions:
        seconds[precision] = (run(3, precision) - run(1, precision)) / 2
        print(f"tox21 s/epoch{label}, {precision}: {seconds[precision]:.2f}", flush=True)
    return seconds


def pretrain_rate(
    data: Path,
    work: Path,
    device: str,
    preset: str,
    batch: int,
    steps: tuple[int, int],
    quick: bool,
    precisions: list[str],
    compile: bool = False,
) -> dict[str, float]:
    dataset = SmilesDataset(  # as the pretrain command builds its corpus
        str(work / "zinc"),
        [str(data / "zinc.csv.gz")],
        pre_transform=T.Compose([AddShortestPath(), AddConformer(seed=0)]),
        max_molecules=200 if quick else 2000,
        num_workers=min(16, os.cpu_count() or 1),
        skip_invalid=True,
    )
    rates = {}
    label = ", compiled" if compile else ""
    if compile:
        torch._dynamo.reset()
    for precision in precisions:
        times = []
        # A first run, left out of the rate, pays what only a first run pays (kernels
        # loaded on first use, the compilation), which would shorten t(S2) - t(S1).
        for count in (steps[0], *steps):
            seed_everything(0)
            model = MoleBlend.from_preset(preset)
            config = PretrainConfig(
                steps=count,
                batch_size=batch,
                device=device,
                precision=precision,
                compile=compile,
                progress=False,
                save_every=10**9,
            )
            with tempfile.TemporaryDirectory() as out:
                sync(device)
                start = time.perf_counter()
                pretrain(model, dataset, out, config)
                sync(device)
                times.append(time.perf_counter() - start)
            print(
                f"  {preset} batch {batch}, {precision}{label}: {count} steps in "
                f"{times[-1]:.2f} s"
            )
        rates[precision] = (steps[1] - steps[0]) * batch / (times[-1] - times[-2])
        print(f"{preset} mol/s{label}, {precision}: {rates[precision]:,.0f}", flush=True)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=".gpu_check", help="folder of gpu_check.sh prepare")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="a few molecules (script check)")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        help="default: fp32 bf16",
    )
    parser.add_argument(
        "--no-compile", action="store_true", help="leave out the compiled measurements"
    )
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    precisions = args.precisions or ["fp32", "bf16"]
    if cuda and not torch.cuda.is_available():
        print("no CUDA device visible", file=sys.stderr)
        return 2
    if cuda:
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    data = Path(args.data)
    results = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        results["tox21 s/epoch"] = tox21_epoch(data, work, args.device, args.quick, precisions)
        short = (2, 4) if args.quick else (20, 120)
        results["small mol/s"] = pretrain_rate(
            data, work, args.device, "small", 64, short, args.quick, precisions
        )
        # A `small` step dispatches about 2,700 operators (counted on the CPU, 64 ZINC
        # molecules): on a GPU, launching them alone may hold batch 64 under the target, so
        # batch 256 is timed too (fp32 only), to tell launch-bound from compute-bound.
        short = (2, 4) if args.quick else (10, 40)
        results["small mol/s, batch 256"] = pretrain_rate(
            data, work, args.device, "small", 128 if args.quick else 256, short, args.quick,
            precisions[:1],
        )
        short = (2, 4) if args.quick else (10, 50)
        results["base mol/s"] = pretrain_rate(
            data, work, args.device, "base", 32, short, args.quick, precisions
        )
        failed = False
        if not args.no_compile:  # last, and a failure here keeps the eager table
            try:
                results["tox21 s/epoch, compiled"] = tox21_epoch(
                    data, work, args.device, args.quick, precisions[:1], compile=True
                )
                short = (2, 4) if args.quick else (20, 120)
                results["small mol/s, compiled"] = pretrain_rate(
                    data, work, args.device, "small", 64, short, args.quick, precisions[:1],
                    compile=True,
                )
            except Exception as error:  # reported, then the table; the exit status says so
                print(f"compiled measures failed: {type(error).__name__}: {error}", flush=True)
                failed = True
    print("\n| measure | precision | value | target | |\n| --- | --- | ---: | ---: | --- |")
    for name, values in results.items():
        target = TARGETS[name]
        for precision, value in values.items():
            ok = value <= target if "s/epoch" in name else value >= target
            verdict = "PASS" if ok else "MISS"
            print(f"| {name} | {precision} | {value:,.2f} | {target:,.0f} | {verdict} |")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
