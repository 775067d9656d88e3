from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit.Chem.Scaffolds.MurckoScaffold import MurckoScaffoldSmiles

from pyg_molblend.data import index_split, random_split, scaffold_split

DATA = Path(__file__).parents[1] / "assets"

# Scaffolds: benzene {0, 1, 2}, cyclohexane {3, 4}, acyclic {5, 6}, pyridine {7},
# cyclopropane {8}, naphthalene {9}.
TINY = [
    "Cc1ccccc1",
    "Oc1ccccc1",
    "Nc1ccccc1",
    "CC1CCCCC1",
    "OC1CCCCC1",
    "CCO",
    "CCN",
    "Cc1ccncc1",
    "CC1CC1",
    "c1ccc2ccccc2c1",
]

# An aluminium complex from HIV.csv that RDKit rejects under full sanitization.
AL_COMPLEX = "O=C1O[Al]23(OC1=O)(OC(=O)C(=O)O2)OC(=O)C(=O)O3"

CIS_DECALIN = "C1CC[C@H]2CCCC[C@@H]2C1"
TRANS_DECALIN = "C1CC[C@H]2CCCC[C@H]2C1"


def _groups(smiles: list[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, smi in enumerate(smiles):
        groups.setdefault(MurckoScaffoldSmiles(smi, includeChirality=True), []).append(i)
    return groups


def test_scaffold_split_hand_checked():
    # Groups sorted by (size, first index) descending: benzene (3), acyclic (2, from 5),
    # cyclohexane (2, from 3), naphthalene, cyclopropane, pyridine. Train takes groups while
    # it stays <= 8 molecules, valid while train + valid <= 9.
    train, valid, test = scaffold_split(TINY)
    assert train.tolist() == [0, 1, 2, 3, 4, 5, 6, 9]
    assert valid.tolist() == [8]
    assert test.tolist() == [7]
    assert train.dtype == valid.dtype == test.dtype == torch.long


def test_scaffold_split_other_fractions():
    # Cutoffs 5 and 7: benzene (3) and acyclic (5) fit in train, cyclohexane goes to valid
    # (7), naphthalene no longer fits train (6 > 5) nor valid (8 > 7), and so on.
    train, valid, test = scaffold_split(TINY, 0.5, 0.2, 0.3)
    assert train.tolist() == [0, 1, 2, 5, 6]
    assert valid.tolist() == [3, 4]
    assert test.tolist() == [7, 8, 9]


def test_scaffold_split_properties(real_smiles):
    n = len(real_smiles)
    train, valid, test = scaffold_split(real_smiles)
    assert sorted(torch.cat([train, valid, test]).tolist()) == list(range(n))
    for part in (train, valid, test):
        assert part.tolist() == sorted(part.tolist())

    # No scaffold in two splits.
    owner = {}
    for name, part in (("train", train), ("valid", valid), ("test", test)):
        for i in part.tolist():
            scaffold = MurckoScaffoldSmiles(real_smiles[i], includeChirality=True)
            assert owner.setdefault(scaffold, name) == name

    # Fractions within one group of the target: train never exceeds 80 %, and every group
    # left out of train was too big for the room that train had left.
    assert len(train) <= 0.8 * n and len(train) + len(valid) <= 0.9 * n
    in_train = set(train.tolist())
    for group in _groups(real_smiles).values():
        if group[0] not in in_train:
            assert len(train) + len(group) > 0.8 * n
    assert len(train) > 0.75 * n and len(valid) > 0.05 * n and len(test) > 0.05 * n

    # Deterministic.
    again = scaffold_split(list(real_smiles))
    assert all(torch.equal(a, b) for a, b in zip((train, valid, test), again, strict=True))


def test_scaffold_split_chirality():
    # Stereoisomeric scaffolds are separate groups only with include_chirality.
    train, valid, test = scaffold_split([CIS_DECALIN, TRANS_DECALIN], 0.5, 0.5, 0.0)
    assert (train.tolist(), valid.tolist(), test.tolist()) == ([1], [0], [])
    train, valid, test = scaffold_split(
        [CIS_DECALIN, TRANS_DECALIN], 0.5, 0.5, 0.0, include_chirality=False
    )
    assert (train.tolist(), valid.tolist(), test.tolist()) == ([], [0, 1], [])


def test_scaffold_split_partial_sanitization_fallback():
    # The complex gets a scaffold of its own instead of an error, so replacing the lone
    # naphthalene by it leaves the hand-checked split unchanged.
    train, valid, test = scaffold_split([*TINY[:9], AL_COMPLEX])
    assert (train.tolist(), valid.tolist(), test.tolist()) == ([0, 1, 2, 3, 4, 5, 6, 9], [8], [7])


def test_scaffold_split_errors():
    with pytest.raises(ValueError, match=r"index 2.*'not a smiles'"):
        scaffold_split(["CCO", "c1ccccc1", "not a smiles"])
    with pytest.raises(ValueError, match="index 1"):
        scaffold_split(["CCO", ""])
    with pytest.raises(ValueError, match="sum to 1"):
        scaffold_split(TINY, 0.8, 0.1, 0.2)
    with pytest.raises(ValueError, match=r"frac_valid.*-0\.1"):
        scaffold_split(TINY, 1.0, -0.1, 0.1)


def test_scaffold_split_empty():
    assert [part.numel() for part in scaffold_split([])] == [0, 0, 0]


@pytest.mark.slow
def test_scaffold_split_reproduces_ogbg_molhiv():
    """On MoleculeNet's HIV.csv, the split equals the official ogbg-molhiv scaffold split
    (the files in tests/assets are byte-identical to OGB's, up to the gzip timestamp)."""
    folder = DATA / "ogbg_molhiv_scaffold"
    with gzip.open(folder / "hiv_smiles.csv.gz", "rt") as f:
        smiles = f.read().splitlines()[1:]
    assert len(smiles) == 41127
    ours = scaffold_split(smiles)
    for name, part in zip(("train", "valid", "test"), ours, strict=True):
        official = np.loadtxt(folder / f"{name}.csv.gz", dtype=np.int64)
        assert part.tolist() == official.tolist(), name
    assert [len(part) for part in ours] == [32901, 4113, 4113]


def test_random_split():
    train, valid, test = random_split(103, seed=1)
    assert (len(train), len(valid), len(test)) == (82, 10, 11)
    assert sorted(torch.cat([train, valid, test]).tolist()) == list(range(103))
    assert train.tolist() == sorted(train.tolist())
    again = random_split(103, seed=1)
    assert all(torch.equal(a, b) for a, b in zip((train, valid, test), again, strict=True))
    assert not torch.equal(random_split(103, seed=2)[0], train)
    assert [len(part) for part in random_split(10, 0.5, 0.5, 0.0)] == [5, 5, 0]


def test_random_split_errors():
    with pytest.raises(ValueError, match="-1"):
        random_split(-1)
    with pytest.raises(ValueError, match="sum to 1"):
        random_split(10, 0.5, 0.2, 0.2)
    with pytest.raises(ValueError, match="frac_test"):
        random_split(10, 0.7, 0.5, -0.2)


def test_index_split():
    train, valid, test = index_split(6, [4, 0, 1], torch.tensor([5]), np.array([3]))
    assert (train.tolist(), valid.tolist(), test.tolist()) == ([0, 1, 4], [5], [3])
    assert train.dtype == torch.long
    # Not every item has to be used.
    assert [len(part) for part in index_split(6, [0], [], [])] == [1, 0, 0]


@pytest.mark.parametrize(
    ("train", "valid", "test", "message"),
    [
        ([0, 6], [1], [2], "train index 6 is out of range"),
        ([0], [-1], [2], "valid index -1 is out of range"),
        ([0], [1], [2.5], "test index 2.5 is not an integer"),
        ([0, 1], [1], [2], "Index 1 is in both train and valid"),
        ([0], [3], [2, 3], "Index 3 is in both valid and test"),
        ([0, 0], [1], [2], "Index 0 appears twice in train"),
        ([True], [1], [2], "train index True is not an integer"),
    ],
)
def test_index_split_errors(train, valid, test, message):
    with pytest.raises(ValueError, match=message):
        index_split(6, train, valid, test)


def test_index_split_tensor_errors():
    with pytest.raises(ValueError, match="integer tensor"):
        index_split(6, torch.tensor([0.0, 1.0]), [], [])
    with pytest.raises(ValueError, match="non-negative integer"):
        index_split(-3, [], [], [])
