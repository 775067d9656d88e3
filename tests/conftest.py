from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "assets"


@pytest.fixture(scope="session")
def real_smiles() -> list[str]:
    """600 real molecules (BBBP, 34 of them salts or mixtures)."""
    with open(DATA / "molecules.csv") as f:
        return [row["smiles"] for row in csv.DictReader(f)]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
