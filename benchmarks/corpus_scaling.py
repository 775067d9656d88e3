"""Does the streaming pretraining corpus scale? Preparation and pretraining at 10k, 100k
and 1M molecules (issue 14, item 2).

For each size, two fresh subprocesses (so that each peak RSS is its own):

* ``prepare``: :class:`~pyg_molblend.datasets.OnDiskMoleculeDataset` over the offline
  pretraining SMILES (``zinc_moses_test``, ``zinc_moses_test_scaffolds``,
  ``chembl_deepchem_5thresh``: 375,650 drug-like molecules), **repeated** as often as the
  size needs (1M = 2.66 passes over them; the JSON says how many), first ``size`` rows,
  ``--num-workers`` processes, 2D only (no conformers: at ~30 ms per molecule a 1M
  conformer corpus takes hours on 2 cores; the conformer rate is measured apart, below).
  Reported: wall time, molecules/s, bytes on disk per molecule, peak RSS of the main
  process and of the largest worker.
* ``pretrain``: opens the store and times ``pretrain()`` (``small`` preset, ``--mode``
  ``2d``, batch 64, 2 threads) for S1 and S2 steps; molecules/s =
  ``(S2 - S1) * 64 / (t(S2) - t(S1))``, the median of ``--timing-repeats`` such pairs.
  Reported: that rate, the time to open the store, and the peak RSS of the process.

``subsets``: the largest store and random subsets of it of the smaller sizes, timed
interleaved in one process, so that the molecules' size distribution (the 1M corpus holds
the larger ChEMBL molecules, the first 100k rows only ZINC ones) does not pass for an effect
of the corpus size.

``--in-memory-sizes`` (default 10k and 100k) repeats both steps with the in-memory route
(``pretrain --in-memory``: pair relations precomputed and held in memory) as the baseline
whose memory grows with the corpus. ``--conformer-sample`` molecules (default 2,000) are
prepared with :class:`~pyg_molblend.transforms.AddConformer` to give the conformer rate
from which the preparation time of the whole offline corpus and of PCQM4Mv2 is
extrapolated.

Results go to ``--json`` after every step; a rerun skips the steps already there (and
the stores resume), so a killed run continues. Usage::

    nice .venv/bin/python benchmarks/corpus_scaling.py \\
        --json benchmarks/results/corpus_scaling.json --work /tmp/corpus_scaling
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PRETRAIN = Path("/work/shared/data/pretrain")
SOURCES = (
    "zinc_moses_test.csv.gz",
    "zinc_moses_test_scaffolds.csv.gz",
    "chembl_deepchem_5thresh.csv.gz",
)
OFFLINE_MOLECULES = 375_650  # the three files (data/DATA.md)
PCQM4MV2_MOLECULES = 3_378_606
RESULT = "RESULT "


def _peak_rss_mb() -> dict[str, float]:
    import resource

    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"peak_rss_mb": self_kb / 1024, "peak_rss_worker_mb": child_kb / 1024}


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(spec["threads"])
    import warnings

    warnings.simplefilter("ignore")
    from pyg_molblend.cli import build_parser
    from pyg_molblend.cli.pretrain import _corpus

    files = [str(PRETRAIN / name) for name in SOURCES] * spec["repeats"]
    argv = ["pretrain", "--smiles", *files, "--root", spec["root"], "--out", spec["out"]]
    argv += ["--max-molecules", str(spec["size"]), "--skip-invalid"]
    argv += ["--num-workers", str(spec["num_workers"] if spec["task"] == "prepare" else 0)]
    if not spec["conformers"]:
        argv.append("--no-conformers")
    if spec["in_memory"]:
        argv.append("--in-memory")
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    dataset, _ = _corpus(args, Path(spec["out"]))
    info: dict[str, Any] = {
        "molecules": len(dataset),
        "open_seconds": time.perf_counter() - started,
    }
    if spec["task"] == "prepare":
        if hasattr(dataset, "nbytes"):
            info["bytes"] = dataset.nbytes
            info["mean_atoms"] = float(dataset.num_nodes_per_graph.double().mean())
        else:
            info["bytes"] = sum(
                os.path.getsize(p) for p in dataset.processed_paths if os.path.exists(p)
            )
        info["bytes_per_molecule"] = info["bytes"] / len(dataset)
        info["molecules_per_second"] = len(dataset) / info["open_seconds"]
        return {**info, **_peak_rss_mb()}

    from pyg_molblend.models import MoleBlend
    from pyg_molblend.training.pretrain import PretrainConfig, pretrain

    def rate(corpus: Any) -> float:
        times = {}
        for steps in spec["steps"]:
            torch.manual_seed(0)
            model = MoleBlend.from_preset("small")
            config = PretrainConfig(
                steps=steps, batch_size=64, mode=spec["mode"], progress=False, save_every=10**6
            )
            started = time.perf_counter()
            pretrain(model, corpus, Path(spec["out"]) / f"run{steps}", config, overwrite=True)
            times[steps] = time.perf_counter() - started
        s1, s2 = spec["steps"]
        return (s2 - s1) * 64 / (times[s2] - times[s1])

    if spec["task"] == "subsets":
        # Random subsets of one store: the same molecule distribution at every size, so
        # that only the corpus size differs; sizes interleaved within each repeat.
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
        corpora = {n: dataset[order[:n]] for n in spec["subset_sizes"]}
        corpora[len(dataset)] = dataset
        runs: dict[int, list[float]] = {n: [] for n in corpora}
        for _ in range(spec["timing_repeats"]):
            for n, corpus in corpora.items():
                runs[n].append(rate(corpus))
        info["molecules_per_second_runs"] = {str(n): r for n, r in runs.items()}
        info["molecules_per_second"] = {str(n): statistics.median(r) for n, r in runs.items()}
        return {**info, **_peak_rss_mb()}
    rates = [rate(dataset) for _ in range(spec["timing_repeats"])]
    info["molecules_per_second_runs"] = rates
    info["molecules_per_second"] = statistics.median(rates)
    return {**info, **_peak_rss_mb()}


def _run(spec: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(spec["threads"])}
    code = f"import json,sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); "
    code += "import corpus_scaling as c; "
    code += f"print({RESULT!r} + json.dumps(c._worker(json.loads(sys.argv[1]))))"
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{spec['task']} {spec['size']} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT) :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--in-memory-sizes", nargs="*", type=int, default=[10_000, 100_000])
    parser.add_argument("--conformer-sample", type=int, default=2000)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", nargs=2, type=int, default=[10, 40])
    parser.add_argument("--timing-repeats", type=int, default=3)
    parser.add_argument("--work", default="/tmp/corpus_scaling")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if args.json and Path(args.json).exists():
        results = json.loads(Path(args.json).read_text())
    results.setdefault("settings", vars(args))
    results.setdefault("environment", f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    runs = results.setdefault("runs", {})

    def step(name: str, spec: dict[str, Any]) -> None:
        if name in runs:
            print(f"{name}: done before")
            return
        spec = {
            "threads": args.threads,
            "num_workers": args.num_workers,
            "steps": args.steps,
            "timing_repeats": args.timing_repeats,
            "mode": "2d",
            "conformers": False,
            "in_memory": False,
            **spec,
        }
        spec["repeats"] = -(-spec["size"] // OFFLINE_MOLECULES)
        started = time.perf_counter()
        runs[name] = {**_run(spec), "repeats": spec["repeats"], "size": spec["size"]}
        runs[name]["wall_seconds"] = time.perf_counter() - started
        print(name, json.dumps(runs[name]))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1) + "\n")

    work = Path(args.work)
    for size in args.sizes:
        root, out = str(work / f"disk{size}"), str(work / f"out_disk{size}")
        step(f"prepare disk {size}", {"task": "prepare", "size": size, "root": root, "out": out})
        step(f"pretrain disk {size}", {"task": "pretrain", "size": size, "root": root, "out": out})
    if args.sizes:  # the largest store's random subsets: throughput at one distribution
        size = max(args.sizes)
        root, out = str(work / f"disk{size}"), str(work / f"out_disk{size}")
        smaller = [n for n in args.sizes if n < size]
        spec = {"task": "subsets", "size": size, "root": root, "out": out}
        step(f"pretrain disk {size} and its random subsets", {**spec, "subset_sizes": smaller})
    for size in args.in_memory_sizes:
        root, out = str(work / f"mem{size}"), str(work / f"out_mem{size}")
        spec = {"size": size, "root": root, "out": out, "in_memory": True}
        step(f"prepare memory {size}", {**spec, "task": "prepare"})
        step(f"pretrain memory {size}", {**spec, "task": "pretrain"})
    if args.conformer_sample:
        size = args.conformer_sample
        spec = {"size": size, "root": str(work / "conf"), "out": str(work / "out_conf")}
        step(f"prepare conformers {size}", {**spec, "task": "prepare", "conformers": True})
        rate = runs[f"prepare conformers {size}"]["molecules_per_second"]
        results["extrapolated_conformer_hours"] = {
            "offline_375k": OFFLINE_MOLECULES / rate / 3600,
            "pcqm4mv2_if_it_needed_conformers": PCQM4MV2_MOLECULES / rate / 3600,
        }
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
