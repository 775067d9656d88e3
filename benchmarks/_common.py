"""Helpers shared by the benchmark scripts (molecule loading, tables).

Nothing here runs at import time of ``pyg_molblend``; the CSV paths are only read when a
benchmark script asks for them.
"""

from __future__ import annotations

import csv
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CSV = Path("/work/shared/data/moleculenet/BBBP.csv")
FALLBACK_CSV = REPO / "tests" / "assets" / "molecules.csv"


def resolve_csv(path: str | None) -> Path:
    """The CSV to read: the given one, else BBBP from the shared data, else the test set."""
    if path is not None:
        return Path(path)
    if DEFAULT_CSV.exists():
        return DEFAULT_CSV
    return FALLBACK_CSV


def read_smiles(path: Path) -> list[str]:
    """The ``smiles`` column (any capitalisation) of a CSV file."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        names = {name.lower(): name for name in reader.fieldnames or []}
        if "smiles" not in names:
            raise SystemExit(f"{path} has no 'smiles' column (columns: {reader.fieldnames})")
        column = names["smiles"]
        return [row[column] for row in reader if row[column]]


def load_molecules(
    path: Path, min_molecules: int = 0, max_molecules: int | None = None
) -> tuple[list, list[str]]:
    """Featurize the molecules of ``path`` with :func:`pyg_molblend.data.from_smiles`,
    skipping unparsable SMILES. If fewer than ``min_molecules`` parse, molecules of
    ``HIV.csv`` next to it are added. Returns the Data objects and a list of source notes."""
    from pyg_molblend.data import from_smiles

    data: list = []
    notes: list[str] = []

    def take(source: Path, limit: float) -> None:
        taken = skipped = 0
        for smiles in read_smiles(source):
            if len(data) >= limit:
                break
            try:
                item = from_smiles(smiles)
            except ValueError:
                skipped += 1
                continue
            data.append(item)
            taken += 1
        notes.append(f"{source}: {taken} molecules ({skipped} unparsable SMILES skipped)")

    take(path, float("inf") if max_molecules is None else max_molecules)
    hiv = path.parent / "HIV.csv"
    if len(data) < min_molecules:
        if hiv.exists() and hiv.resolve() != path.resolve():
            take(hiv, min_molecules)
        else:
            notes.append(f"only {len(data)} molecules (< {min_molecules}) and no {hiv}")
    return data, notes


def environment() -> str:
    return (
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPU cores, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min)"
    )


def synchronize(device: str) -> None:
    """Waits for the GPU's queued work, so that a timer measures it (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    title: str = "",
    align: str | None = None,
) -> str:
    """A plain-text table of pre-formatted cells; ``align`` is one ``l``/``r`` per column
    (default: first column left, the others right)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)
    lines = []
    if title:
        lines.append(title)
    lines.append("  ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        lines.append(
            "  ".join(
                c.ljust(w) if a == "l" else c.rjust(w)
                for c, w, a in zip(row, widths, align, strict=True)
            )
        )
    return "\n".join(lines)


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None
) -> str:
    """A GitHub-flavoured Markdown table; ``align`` as in :func:`table`."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(str(c) for c in cells) + " |" for cells in (headers, rule, *rows)]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"
