"""The weights shipped in the package as ``--checkpoint pretrained``."""

import json
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Batch

from pyg_molblend import __version__
from pyg_molblend.cli import main
from pyg_molblend.cli.common import default_checkpoint
from pyg_molblend.cli.embed import embed_smiles
from pyg_molblend.data import from_smiles
from pyg_molblend.models import PRESETS, MoleBlend
from pyg_molblend.training.checkpoint import (
    FEATURE_CONTRACT,
    load_checkpoint,
    load_encoder,
    resolve_checkpoint,
)
from pyg_molblend.transforms import AddConformer

DATA = Path(__file__).parents[1] / "assets"
WEIGHTS = Path(__file__).parents[2] / "benchmarks" / "weights"


def test_shipped_checkpoint_and_its_contract():
    path = resolve_checkpoint("pretrained")
    assert path.name == "pretrained_small.pt"
    assert path.stat().st_size < 25 * 2**20
    payload = load_checkpoint("pretrained", kind="pretrain")
    assert payload["feature_contract"] == FEATURE_CONTRACT
    assert payload["version"] == __version__
    for key, value in PRESETS["small"].items():
        assert payload["encoder_config"][key] == value
    assert "optimizer" not in payload and "rng" not in payload  # weights only
    # the validation pick of the 5M-visit run (benchmarks/RESULTS.md, section 10b): the weights
    # of its 70,000-step snapshot, exactly, with the run's configuration and corpus
    assert payload["step"] == 70_000 and payload["config"]["steps"] == 80_000
    picked = load_checkpoint(WEIGHTS / "pretrain5m_step_0070000.pt", kind="pretrain")
    assert picked["encoder_state"].keys() == payload["encoder_state"].keys()
    for key, value in picked["encoder_state"].items():
        assert torch.equal(value, payload["encoder_state"][key]), key
    assert payload["data"]["molecules"] == picked["data"]["molecules"] == 503_643
    assert payload["data"]["sources"]["qm9"] > 0 and payload["data"]["sources"]["smiles"] > 0
    # the README's main command fine-tunes from it by default
    assert default_checkpoint() == "pretrained"


def _batch(real_smiles, conformers=False):
    conformer = AddConformer(seed=0)
    datas = [from_smiles(s) for s in real_smiles[:48]]
    if conformers:
        datas = [conformer(d) for d in datas]
    return Batch.from_data_list(datas)


def test_shipped_weights_recover_relations_an_untrained_model_cannot(real_smiles):
    # BBBP molecules, not in the pretraining corpus (ZINC/MOSES, ChEMBL, QM9). Measured:
    # 2D SPD accuracy 0.51, edge accuracy 0.83; 3D denoising 0.31, 3D loss 0.74 (the 4,000-step
    # weights shipped before: 0.19, 0.73, 0.55, 0.96); far from an untrained model's on every
    # pretraining target.
    batch = _batch(real_smiles, conformers=True)
    trained = load_encoder("pretrained").eval()
    torch.manual_seed(0)
    untrained = MoleBlend.from_preset("small").eval()
    parts = {}
    with torch.no_grad():
        for name, model in (("trained", trained), ("untrained", untrained)):
            for mode in ("2d", "3d"):
                generator = torch.Generator().manual_seed(0)  # the same noise for both
                parts[name, mode] = model.pretrain_loss(batch, mode, generator).parts
    ours, base = parts["trained", "2d"], parts["untrained", "2d"]
    assert ours["edge_acc"] > 0.8 > 0.1 > base["edge_acc"]
    assert ours["spd_acc"] > 0.45 > 0.12 > base["spd_acc"]
    # 3D mode: the denoising head finds the noise (1 - cos, chance 1.0)
    ours, base = parts["trained", "3d"], parts["untrained", "3d"]
    assert ours["denoise"] < 0.4 < 0.95 < base["denoise"]
    assert ours["3d"] < 0.8 < 0.98 < base["3d"]


def test_cli_uses_the_shipped_weights(tmp_path, real_smiles):
    smiles = real_smiles[:5]
    first = embed_smiles("pretrained", smiles)
    assert first.shape == (5, PRESETS["small"]["channels"]) and np.isfinite(first).all()
    np.testing.assert_array_equal(embed_smiles("pretrained", smiles), first)

    out = tmp_path / "ft"
    args = ["finetune", "--csv", str(DATA / "tiny_bbbp.csv"), "--targets", "p_np"]
    args += ["--task", "classification", "--root", str(tmp_path / "data")]
    args += ["--epochs", "1", "--batch-size", "16", "--out", str(out)]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoint"] == "pretrained"
    # the fine-tuned encoder started from the shipped weights, not from a fresh init
    tuned = load_encoder(out / "model.pt").state_dict()["atom_encoder.table.weight"]
    shipped = load_encoder("pretrained").state_dict()["atom_encoder.table.weight"]
    fresh = MoleBlend.from_preset("small").state_dict()["atom_encoder.table.weight"]
    assert (tuned - shipped).norm() < 0.2 * (fresh - shipped).norm()
