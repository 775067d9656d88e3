"""The docstring examples of the package run as doctests (as PyG and DGL show usage)."""

import doctest
import importlib
import pkgutil

import pytest
import torch

import pyg_molblend

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(pyg_molblend.__path__, "pyg_molblend.")
    if not info.name.endswith("__main__")
)


def _with_examples(name: str) -> bool:
    module = importlib.import_module(name)
    return any(test.examples for test in doctest.DocTestFinder().find(module))


@pytest.mark.parametrize("name", [m for m in MODULES if _with_examples(m)])
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_every_public_module_repr_shows_its_options():
    from pyg_molblend import BlendedGraphTransformer
    from pyg_molblend.nn import (
        AtomEncoder,
        DegreeEncoder,
        DenoiseHead,
        Dropout,
        DropPath,
        EdgePathBias,
        GaussianDistanceBias,
        ModalityBlend,
        PairHead,
        SPDBias,
    )

    expected = {
        AtomEncoder(8): "AtomEncoder(8)",
        DegreeEncoder(8, max_degree=10): "DegreeEncoder(8, max_degree=10)",
        SPDBias(4, max_distance=7): "SPDBias(heads=4, max_distance=7)",
        EdgePathBias(4, max_hops=3): "EdgePathBias(heads=4, max_hops=3)",
        GaussianDistanceBias(4, 8, num_kernels=5): (
            "GaussianDistanceBias(heads=4, channels=8, num_kernels=5)"
        ),
        PairHead(8, 3, hidden_channels=2): "PairHead(8, 3, hidden_channels=2)",
        DenoiseHead(8, 2, attn_dropout=0.2): "DenoiseHead(8, heads=2, attn_dropout=0.2)",
        DropPath(0.1): "DropPath(p=0.1)",
        Dropout(0.2): "Dropout(p=0.2, inplace=False)",
        ModalityBlend(ratio=(1, 1, 2), atom_2d_prob=0.5, per_molecule=False): (
            "ModalityBlend(ratio=(1.0, 1.0, 2.0), atom_2d_prob=0.5, per_molecule=False)"
        ),
        BlendedGraphTransformer(8, heads=2, ffn_channels=16, norm_first=True): (
            "BlendedGraphTransformer(8, heads=2, ffn_channels=16, norm_first=True)"
        ),
    }
    for module, text in expected.items():
        assert repr(module) == text
