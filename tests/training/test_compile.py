"""``compile``: the encoder's layers through :func:`torch.compile` compute what eager
layers do, and ``finetune``/``pretrain`` (API and CLI) compile them when asked.

The package compiles with inductor; these tests trace with ``"aot_eager"`` (the same
dynamo and autograd graphs, run without generated code), so that they need no C++
compiler and take seconds. Inductor itself is exercised on CUDA in ``tests/test_cuda.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch

import pyg_molblend.training.utils as training_utils
from pyg_molblend.cli import build_parser, main
from pyg_molblend.data import from_smiles
from pyg_molblend.models import MoleBlend, MoleBlendPredictor
from pyg_molblend.training import FinetuneConfig, PretrainConfig
from pyg_molblend.training.finetune import finetune
from pyg_molblend.training.pretrain import pretrain
from pyg_molblend.training.utils import compile_layers
from pyg_molblend.transforms import AddConformer, AddShortestPath


@pytest.fixture(autouse=True)
def _trace_only(monkeypatch):
    monkeypatch.setattr(training_utils, "COMPILE_BACKEND", "aot_eager")
    yield
    torch._dynamo.reset()


def _compiled(model: MoleBlend) -> bool:
    return all(getattr(layer, "_compiled_call_impl", None) is not None for layer in model.layers)


def _batch(smiles: list[str]) -> Batch:
    return Batch.from_data_list([AddConformer(seed=0)(from_smiles(s)) for s in smiles])


def test_compiled_layers_compute_what_eager_layers_do(real_smiles):
    torch.manual_seed(0)
    no_noise = dict(attn_dropout=0.0, activation_dropout=0.0, drop_path=0.0)
    eager = MoleBlend.from_preset("small", **no_noise).double()
    compiled = MoleBlend.from_preset("small", **no_noise).double()
    compiled.load_state_dict(eager.state_dict())
    assert compile_layers(compiled) is compiled and _compiled(compiled)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    params = list(zip(eager.parameters(), compiled.parameters(), strict=True))
    # Two batches of different sizes (the layers are compiled with dynamic shapes).
    for smiles in (real_smiles[:3], real_smiles[10:15]):
        batch = _batch(smiles)
        losses = []
        for model in (eager, compiled):
            model.zero_grad()
            torch.manual_seed(1)  # the blend's per-pair modality draw
            loss = model.pretrain_loss(batch, mode="blend").loss
            loss = loss + model(batch, mode="2d").square().sum()  # the last layer's 1-query path
            loss.backward()
            losses.append(loss.detach())
        assert torch.equal(losses[1], losses[0])
        with torch.no_grad():  # inference: eval mode, no autograd (another graph)
            expected = eager.eval()(batch, mode="2d+3d")
            torch.testing.assert_close(compiled.eval()(batch, mode="2d+3d"), expected)
        eager.train()
        compiled.train()
        for a, b in params:
            assert (a.grad is None) == (b.grad is None)
            if a.grad is not None:
                torch.testing.assert_close(b.grad, a.grad, rtol=1e-12, atol=1e-14)


def _labelled(real_smiles: list[str], count: int) -> list:
    graphs = []
    for s in real_smiles[:count]:
        graph = AddShortestPath()(from_smiles(s))
        graph.y = torch.tensor([[float(graph.num_nodes % 3)]])
        graphs.append(graph)
    return graphs


def test_finetune_and_pretrain_compile_the_layers_only_when_asked(
    real_smiles, tmp_path, monkeypatch
):
    # The wiring (what compiling changes is the test above): the model being trained is
    # handed to compile_layers once, before its first step, and only with compile=True.
    seen = []
    for name in ("finetune", "pretrain"):
        module = sys.modules[f"pyg_molblend.training.{name}"]
        monkeypatch.setattr(module, "compile_layers", lambda model: seen.append(model))
    data = _labelled(real_smiles, 12)
    for flag in (False, True):
        predictor = MoleBlendPredictor(MoleBlend.from_preset("small"), 1, "regression")
        config = FinetuneConfig(epochs=1, batch_size=4, progress=False, compile=flag)
        finetune(predictor, data[:8], data[8:], None, config)
        assert seen == ([predictor.encoder] if flag else [])
        seen.clear()
    corpus = [AddConformer(seed=0)(g) for g in data]
    for flag in (False, True):
        model = MoleBlend.from_preset("small")
        config = PretrainConfig(steps=2, batch_size=4, progress=False, compile=flag)
        pretrain(model, corpus, tmp_path / f"run_{flag}", config)
        assert seen == ([model] if flag else [])
        seen.clear()
    saved = torch.load(tmp_path / "run_True" / "checkpoint.pt", weights_only=True)
    assert saved["config"]["compile"] is True


def test_cli_compile_flag(tmp_path, monkeypatch, capsys):
    parser = build_parser()
    for command in ("finetune", "pretrain", "hpopt"):
        assert parser.parse_args([command, "--compile"]).compile is True
        assert parser.parse_args([command]).compile is False
    required = ["--checkpoint", "m.pt", "--smiles", "in.csv", "--out", "out"]
    for command, needed in (("predict", required), ("evaluate", required[:2]), ("embed", required)):
        parser.parse_args([command, *needed])  # inference commands have no such flag
        with pytest.raises(SystemExit):
            parser.parse_args([command, *needed, "--compile"])
        assert "unrecognized arguments: --compile" in capsys.readouterr().err
    seen = []
    module = sys.modules["pyg_molblend.training.finetune"]  # the package exports the function
    monkeypatch.setattr(module, "compile_layers", lambda model: seen.append(model))
    assets = Path(__file__).parents[1] / "assets"
    args = ["finetune", "--csv", str(assets / "tiny_esol.csv"), "--targets", "logS"]
    args += ["--task", "regression", "--root", str(tmp_path / "data"), "--epochs", "1"]
    args += ["--batch-size", "16", "--device", "cpu", "--out", str(tmp_path / "ft")]
    assert main([*args, "--compile"]) == 0
    assert len(seen) == 1 and isinstance(seen[0], MoleBlend)
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["settings"]["compile"] is True and metrics["test"] > 0


def test_dropout_inside_compiled_code_is_torchs():
    # The CPU masks come from numpy, which dynamo would trace into torch operators it
    # cannot run (16-bit comparisons); compiled code uses torch's dropout instead.
    from pyg_molblend.nn.dropout import dropout

    compiled = torch.compile(lambda x: dropout(x, 0.5), backend=training_utils.COMPILE_BACKEND)
    out = compiled(torch.ones(64, 64))
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert 0.4 < (out == 0).float().mean().item() < 0.6  # 4,096 draws: std 0.008


def test_layers_share_one_compiled_graph(monkeypatch, real_smiles):
    # Pretraining's stochastic depth rises linearly over the layers (0, 1/30, 2/30, 0.1 for
    # `small`): branching on each layer's probability would compile every layer anew, and
    # batches of other sizes must not recompile either (dynamic shapes).
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    monkeypatch.setattr(training_utils, "COMPILE_BACKEND", counter)
    model = compile_layers(MoleBlend.from_preset("small", drop_path=0.1))
    assert len({layer.drop_path.p for layer in model.layers}) == 4
    for smiles in (real_smiles[:3], real_smiles[20:26]):
        model.pretrain_loss(_batch(smiles), mode="blend").loss.backward()
    assert counter.frame_count == 1
