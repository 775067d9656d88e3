"""Pretraining throughput: molecules per second of ``pretrain()``, this tree vs a baseline.

Each measurement is a fresh subprocess that imports ``pyg_molblend`` from one source tree
(``PYTHONPATH=<tree>``; the subprocess checks and prints ``pyg_molblend.__file__``), loads
the corpus exactly as ``pyg-molblend pretrain --smiles FILE`` does (the CLI's own argument
parser and corpus builder: since d422f92 an
:class:`~pyg_molblend.datasets.OnDiskMoleculeDataset` with ``AddConformer(seed=0)``, pair
relations per batch; before it a :class:`~pyg_molblend.datasets.SmilesDataset` with
``AddShortestPath()`` and ``AddConformer(seed=0)`` as ``pre_transform``), calls
``tune_malloc()`` where the tree has it (as the CLI does before every command), builds
``MoleBlend.from_preset(preset)`` and times the public
``pyg_molblend.training.pretrain.pretrain(model, dataset, out, config)`` call for S1 and
for S2 optimizer steps (``progress=False``, the CLI's defaults otherwise: batch 64, mode
``blend``, seed 0). Throughput is ``(S2 - S1) * batch_size / (t(S2) - t(S1))``, so
start-up, the first (warm-up) steps and the final checkpoint cancel out. The default
``--steps 40 140`` starts after the corpus's first epoch (until 2026-12-08: ``5 25``).

The corpus is the first ``--num-molecules`` RDKit-parsable SMILES of ``--smiles``
(default: MOSES test from the shared data), written once to ``--cache`` as a CSV; the
package's own dataset cache (conformers, ~30 ms per molecule) lives next to it and is
shared by both trees: the baseline reads the same processed file when its cache key is the
same, and builds its own from the same CSV otherwise. Both corpora are checked to hold the
same molecules in the same order (SMILES and atom counts; conformers are compared too).

Usage::

    nice .venv/bin/python benchmarks/pretrain_throughput.py --baseline /work/baseline-1e84894
    nice .venv/bin/python benchmarks/pretrain_throughput.py --presets small base --repeats 3
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SMILES = Path("/work/shared/data/pretrain/zinc_moses_test.csv.gz")
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "pyg_molblend_pretrain_throughput"
TARGET = {"small": 4.0}  # new / baseline molecules per second (the target)
RESULT = "RESULT "  # prefix of the worker's one JSON line on stdout


class WorkerError(RuntimeError):
    """A measurement subprocess failed (its output's tail is the message)."""


# --------------------------------------------------------------------------- worker side


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in the subprocess: load the corpus with the tree's own code, then either
    describe it (``steps`` 0) or time ``pretrain`` for ``steps`` steps."""
    import torch

    torch.set_num_threads(spec["threads"])
    import hashlib

    import pyg_molblend

    tree = Path(spec["tree"]).resolve()
    module = Path(pyg_molblend.__file__).resolve()
    if tree not in module.parents:
        raise SystemExit(f"pyg_molblend imported from {module}, not from the tree {tree}")

    from pyg_molblend.cli import build_parser
    from pyg_molblend.cli.pretrain import _corpus
    from pyg_molblend.models import MoleBlend
    from pyg_molblend.training.finetune import seed_everything  # in both trees (not utils)
    from pyg_molblend.training.pretrain import PretrainConfig, pretrain

    with tempfile.TemporaryDirectory(prefix="pretrain_throughput_") as out:
        args = build_parser().parse_args(
            [
                "pretrain",
                "--smiles",
                spec["smiles"],
                "--root",
                spec["root"],
                "--out",
                out,
                "--num-workers",
                str(spec["num_workers"]),
                "--batch-size",
                str(spec["batch_size"]),
                "--preset",
                spec["preset"],
                "--seed",
                str(spec["seed"]),
            ]
        )
        started = time.perf_counter()
        dataset, _ = _corpus(args, Path(out))
        info: dict[str, Any] = {
            "module": str(module),
            "load_seconds": time.perf_counter() - started,
            "molecules": len(dataset),
        }
        if spec["steps"] == 0:  # describe the corpus, whichever route the tree takes
            import torch_geometric

            # One collated batch of every molecule: the in-memory route's storage, or the
            # records of an on-disk store (the route pretrain takes by default since d422f92).
            data = torch_geometric.data.Batch.from_data_list(
                [dataset[i] for i in range(len(dataset))]
            )
            sizes = data.ptr.diff().tolist()
            pos = data.pos.detach().cpu().contiguous().double().numpy()
            info.update(
                processed=str((getattr(dataset, "processed_paths", None) or [dataset.folder])[0]),
                smiles_sha=hashlib.sha256("\n".join(data.smiles).encode()).hexdigest(),
                sizes_sha=hashlib.sha256(repr(sizes).encode()).hexdigest(),
                pos_sha=hashlib.sha256(pos.round(4).tobytes()).hexdigest(),
                with_3d=int(data.has_pos.sum()) if "has_pos" in data else None,
                mean_atoms=sum(sizes) / len(sizes),
                max_atoms=max(sizes),
                min_atoms=min(sizes),
            )
            return info

        # As the CLI does before every command (trees since tune_malloc was added): keep
        # freed tensor memory in the heap between steps.
        try:
            from pyg_molblend.training.utils import tune_malloc as tune
        except ImportError:  # a tree from before it (or before training.utils)
            tune = None
        info["tune_malloc"] = bool(tune()) if tune is not None else None
        seed_everything(spec["seed"])  # as the CLI does, before the model exists
        model = MoleBlend.from_preset(spec["preset"])
        # Trees before --precision know no such setting: fp32 is passed as nothing.
        precision = {} if spec["precision"] == "fp32" else {"precision": spec["precision"]}
        config = PretrainConfig(
            steps=spec["steps"],
            batch_size=spec["batch_size"],
            seed=spec["seed"],
            mode=spec["mode"],
            device=spec["device"],
            progress=False,
            **precision,
        )
        run_dir = Path(out) / "run"
        started = time.perf_counter()
        summary = pretrain(model, dataset, out=run_dir, config=config)
        info.update(
            seconds=time.perf_counter() - started,
            loop_seconds=summary["seconds"],
            steps=summary["steps"],
            loss=summary["last"].get("loss"),
        )
        return info


# --------------------------------------------------------------------------- driver side


def write_corpus(source: Path, count: int, cache: Path) -> tuple[Path, int]:
    """The first ``count`` RDKit-parsable SMILES of ``source`` as a CSV in ``cache``,
    rewritten only if its content changes (the package's cache key covers the file's
    modification time). Returns the path and the number of unparsable SMILES skipped."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    opener = gzip.open if source.suffix == ".gz" else open
    smiles: list[str] = []
    skipped = 0
    with opener(source, "rt", newline="") as f:
        reader = csv.DictReader(f)
        names = {name.strip().lower(): name for name in reader.fieldnames or []}
        if "smiles" not in names:
            raise SystemExit(f"{source} has no 'smiles' column ({reader.fieldnames})")
        for row in reader:
            text = (row[names["smiles"]] or "").strip()
            if not text:
                continue
            if Chem.MolFromSmiles(text) is None:
                skipped += 1
                continue
            smiles.append(text)
            if len(smiles) >= count:
                break
    if len(smiles) < count:
        print(f"note: {source} holds only {len(smiles)} parsable SMILES (< {count})")
    stem = source.name.split(".")[0]
    path = cache / f"{stem}_first{len(smiles)}.csv"
    content = "smiles\n" + "".join(f"{s}\n" for s in smiles)
    if not path.exists() or path.read_text() != content:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(content)
        tmp.replace(path)
    return path, skipped


def tree_label(tree: Path) -> str:
    """Short commit of a git tree, ``+dirty`` if its package differs from the commit."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(tree), "status", "--porcelain", "--", "pyg_molblend"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return commit + ("+dirty" if dirty else "")


def run_worker(spec: dict[str, Any], progress: bool) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = spec["tree"]
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(spec["threads"])
    if not progress:
        env["TQDM_DISABLE"] = "1"
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
        env=env,
        cwd=tempfile.gettempdir(),  # not the repository root: PYTHONPATH alone decides
        stdout=subprocess.PIPE,
        stderr=None if progress else subprocess.PIPE,
        text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + (proc.stderr or "")).splitlines()[-30:])
        raise WorkerError(f"worker failed (exit {proc.returncode}) for {spec}:\n{tail}")
    return json.loads(lines[-1][len(RESULT) :])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--presets", nargs="+", default=["small"], choices=["small", "base"])
    parser.add_argument("--smiles", type=Path, default=DEFAULT_SMILES)
    parser.add_argument("--num-molecules", type=int, default=2000)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--tree", type=Path, default=REPO, help="the tree measured as 'new'")
    parser.add_argument("--baseline", type=Path, help="a source tree to compare against")
    # S1 past the corpus's first epoch (32 batches of 64): every batch shape has been seen
    # once, so oneDNN's per-shape setup (about 0.3 ms a new product shape) is not counted;
    # a real run takes thousands of steps over the same shapes.
    parser.add_argument("--steps", type=int, nargs=2, default=[40, 140], metavar=("S1", "S2"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--mode", default="blend")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32"],
        choices=["fp32", "tf32", "bf16"],
        help="the new tree is timed in each (sides 'new', 'new-bf16', ...); the baseline in fp32",
    )
    parser.add_argument("--num-workers", type=int, default=2, help="for building the cache")
    parser.add_argument("--json", type=Path, help="write the results here (as they come)")
    parser.add_argument("--progress", action="store_true", help="show the workers' output")
    args = parser.parse_args()

    if args.worker is not None:
        print(RESULT + json.dumps(_worker(json.loads(args.worker))), flush=True)
        return 0

    from _common import environment, markdown_table, verdict

    s1, s2 = args.steps
    if not 0 < s1 < s2:
        parser.error("--steps S1 S2 needs 0 < S1 < S2")
    print(environment())  # includes the load average at start
    sides = {"new": args.tree.resolve()}
    if args.baseline is not None:
        sides["baseline"] = args.baseline.resolve()
    labels = {side: tree_label(tree) for side, tree in sides.items()}
    # The new tree once per precision (fp32 as "new"), timed beside the others.
    timed_sides = {
        ("new" if p == "fp32" else f"new-{p}"): (sides["new"], p) for p in args.precisions
    }
    if args.baseline is not None:
        timed_sides["baseline"] = (sides["baseline"], "fp32")
    for side in timed_sides:  # new-bf16 etc. are the new tree's commit
        labels.setdefault(side, labels["new"])

    results: dict[str, Any] = {
        "settings": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "worker"
        },
        "environment": environment(),
        "load_average_start": os.getloadavg(),
        "trees": {
            side: {"path": str(tree), "commit": labels[side]} for side, tree in sides.items()
        },
        "runs": [],
    }

    def save() -> None:
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2) + "\n")

    smiles_csv, skipped = write_corpus(args.smiles, args.num_molecules, args.cache)
    root = args.cache / "processed-root"
    results["corpus"] = {"csv": str(smiles_csv), "source": str(args.smiles), "skipped": skipped}
    base_spec = {
        "smiles": str(smiles_csv),
        "root": str(root),
        "threads": args.threads,
        "num_workers": args.num_workers,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "mode": args.mode,
        "device": args.device,
        "precision": "fp32",
    }

    # The corpus, described (and built if needed) by each tree's own code.
    corpora: dict[str, dict[str, Any]] = {}
    for side, tree in sides.items():
        print(f"[{side}] corpus from {smiles_csv} (building the cache takes ~30 ms a molecule)")
        spec = {**base_spec, "tree": str(tree), "steps": 0, "preset": args.presets[0]}
        corpora[side] = info = run_worker(spec, args.progress)
        print(
            f"[{side}] pyg_molblend from {info['module']} ({labels[side]}): "
            f"{info['molecules']} molecules, {info['with_3d']} with 3D, atoms mean "
            f"{info['mean_atoms']:.1f} max {info['max_atoms']}; loaded in "
            f"{info['load_seconds']:.1f} s from {info['processed']}"
        )
    results["corpus"].update(corpora)
    save()
    if "baseline" in corpora:
        new, old = corpora["new"], corpora["baseline"]
        same = all(new[k] == old[k] for k in ("molecules", "smiles_sha", "sizes_sha"))
        if not same:
            print("ERROR: the two trees' corpora differ (molecules, order or atom counts)")
            return 1
        same_file = new["processed"] == old["processed"]
        print(
            "corpora: same molecules in the same order; conformers "
            + ("identical" if new["pos_sha"] == old["pos_sha"] else "DIFFER")
            + ("; the baseline read the same cache file" if same_file else "")
        )

    # Timing, alternating the trees: new, baseline, new, baseline ...
    rates: dict[tuple[str, str], list[float]] = {}
    for preset in args.presets:
        for repeat in range(args.repeats):
            for side, (tree, precision) in timed_sides.items():
                times = {}
                for steps in (s1, s2):
                    spec = {**base_spec, "tree": str(tree), "steps": steps, "preset": preset}
                    spec["precision"] = precision
                    try:  # the tree may be mid-edit: note the failure, go on with the others
                        info = run_worker(spec, args.progress)
                    except WorkerError as error:
                        print(f"[{preset} {side} {repeat + 1}/{args.repeats}] {error}")
                        info = {"error": str(error)}
                    results["runs"].append(
                        {"preset": preset, "side": side, "repeat": repeat, **spec, **info}
                    )
                    save()
                    if "error" in info:
                        break
                    times[steps] = info["seconds"]
                if len(times) < 2:
                    continue
                rate = (s2 - s1) * args.batch_size / (times[s2] - times[s1])
                rates.setdefault((preset, side), []).append(rate)
                print(
                    f"[{preset} {side} {repeat + 1}/{args.repeats}] t({s1})={times[s1]:.2f} s "
                    f"t({s2})={times[s2]:.2f} s -> {rate:.1f} molecules/s "
                    f"(load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )

    rows, summary = [], []
    for preset in args.presets:
        for side in timed_sides:
            values = rates.get((preset, side))
            if not values:
                rows.append([preset, side, labels[side], "failed", "", ""])
                continue
            rows.append(
                [
                    preset,
                    side,
                    labels[side],
                    f"{max(values):.1f}",
                    f"{statistics.median(values):.1f}",
                    " ".join(f"{v:.1f}" for v in values),
                ]
            )
        for side in timed_sides:
            if side == "baseline" or not rates.get((preset, side)):
                continue
            if not rates.get((preset, "baseline")):
                continue
            new, old = rates[(preset, side)], rates[(preset, "baseline")]
            best = max(new) / max(old)
            median = statistics.median(new) / statistics.median(old)
            target = TARGET.get(preset)
            line = f"{preset}: {side}/baseline {best:.2f}x (best), {median:.2f}x (median)"
            if target is not None:
                line += f"; target >= {target:g}x: {verdict(best >= target)}"
            summary.append(line)
            key = preset if side == "new" else f"{preset}/{side}"
            results.setdefault("ratios", {})[key] = {
                "best": best,
                "median": median,
                "target": target,
                "pass": None if target is None else best >= target,
            }
    results["rates"] = {f"{p}/{s}": v for (p, s), v in rates.items()}
    results["load_average_end"] = os.getloadavg()
    save()

    print()
    print(
        f"Pretraining throughput: {corpora['new']['molecules']} molecules, "
        f"batch {args.batch_size}, {args.threads} threads, mode {args.mode}, "
        f"steps {s1}->{s2}, {args.repeats} repeats"
    )
    print(
        markdown_table(
            ["preset", "tree", "commit", "molecules/s (best)", "median", "all"],
            rows,
            align="lllrrr",
        )
    )
    for line in summary:
        print(line)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
