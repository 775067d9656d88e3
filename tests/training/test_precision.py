"""``precision``: fp32, TF32 (CUDA) and bf16 autocast in training and inference."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from pyg_molblend.cli import main
from pyg_molblend.data import from_smiles
from pyg_molblend.models import MoleBlendPredictor
from pyg_molblend.training import FinetuneConfig, PretrainConfig, utils
from pyg_molblend.training.checkpoint import load_encoder
from pyg_molblend.training.finetune import predict, train_step
from pyg_molblend.training.inference import ModelSet
from pyg_molblend.training.utils import (
    FiniteGuard,
    dense_batch,
    make_optimizer,
    precision_scope,
    warmup_cosine,
)
from pyg_molblend.transforms import AddShortestPath


def _graphs(smiles: list[str]) -> list:
    return [AddShortestPath()(from_smiles(s)) for s in smiles]


def _predictor() -> MoleBlendPredictor:
    torch.manual_seed(0)
    encoder = load_encoder("pretrained")
    return MoleBlendPredictor(encoder, 1, "regression")


def test_tf32_scope_sets_and_restores_torchs_flags():
    # The flags are plain settings, so this runs without a GPU: only the device name
    # says CUDA.
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        with precision_scope("tf32", "cuda"):
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        with pytest.raises(RuntimeError, match="inside"):
            with precision_scope("tf32", "cuda:1"):
                raise RuntimeError("inside")
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        with precision_scope("bf16", "cuda"):  # bf16 is autocast's business, not the flags'
            assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize(
    "make",
    [
        lambda p: FinetuneConfig(precision=p),
        lambda p: PretrainConfig(precision=p),
        lambda p: ModelSet("no/such/model.pt", "cpu", p),  # refused before the file is read
    ],
    ids=["finetune", "pretrain", "model-set"],
)
def test_unknown_or_unrunnable_precision_is_refused_by_name(make):
    with pytest.raises(ValueError, match="precision 'tf32' is a mode of CUDA"):
        make("tf32")
    with pytest.raises(ValueError, match="got 'fp16'"):
        make("fp16")


def test_bf16_on_a_cpu_without_bf16_kernels_warns_and_runs(monkeypatch):
    import warnings

    monkeypatch.setattr(utils, "cpu_has_bf16_kernels", lambda: True)
    monkeypatch.setattr(utils, "_bf16_warned", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FinetuneConfig(precision="bf16")  # a CPU with bf16 kernels: nothing to say
        monkeypatch.setattr(utils, "cpu_has_bf16_kernels", lambda: False)
        FinetuneConfig(precision="fp32")
        utils.check_precision("bf16", "meta")  # not a CPU
    with pytest.warns(UserWarning, match=r"no bf16 matrix kernels .* about 10x slower"):
        config = FinetuneConfig(precision="bf16")
    assert config.precision == "bf16"  # a warning, not a refusal
    with warnings.catch_warnings():  # once per process, not once per step
        warnings.simplefilter("error")
        utils.check_precision("bf16", "cpu")


def test_bf16_kernel_check_follows_the_cpu_instruction_set():
    from pyg_molblend.training.utils import cpu_has_bf16_kernels

    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("DEFAULT", "AVX2", "AVX512"):
        pytest.skip(f"not an x86 CPU ({capability})")
    if os.environ.get("ATEN_CPU_CAPABILITY"):
        pytest.skip("ATEN_CPU_CAPABILITY lowers torch's instruction set, not oneDNN's")
    if capability == "AVX2":
        # Newer AVX2 CPUs with AVX-NE-CONVERT get oneDNN's bf16 kernels too (its avx2_vnni_2).
        try:
            flags = Path("/proc/cpuinfo").read_text().split()
        except OSError:
            pytest.skip("cannot read the CPU flags to tell which AVX2 CPU this is")
        if "avx_ne_convert" in flags:
            pytest.skip("an AVX2 CPU with AVX-NE-CONVERT, which oneDNN runs bf16 on")
    # oneDNN has bf16 kernels from AVX-512 on; plain AVX2 machines fall back to slow code.
    assert cpu_has_bf16_kernels() == (capability == "AVX512")


def test_cli_refuses_tf32_on_the_cpu_before_reading_anything(tmp_path, capsys):
    args = ["predict", "--checkpoint", "no/such.pt", "--smiles", "no/such.csv"]
    args += ["--out", str(tmp_path / "p.csv"), "--device", "cpu", "--precision", "tf32"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert "predict: error: --precision 'tf32' is a mode of CUDA" in err
    assert "no/such" not in err  # the precision is checked first


def test_bf16_predictions_follow_fp32_on_real_molecules(real_smiles):
    graphs = _graphs(real_smiles[:96])
    predictor = _predictor()
    with torch.no_grad():  # a head that spreads the predictions over a few units
        predictor.head[-1].weight.mul_(50.0)
    fp32 = predict(predictor, graphs, batch_size=32)
    bf16 = predict(predictor, graphs, batch_size=32, precision="bf16")
    assert fp32.dtype == bf16.dtype == np.float32
    spread = fp32.std()
    assert spread > 0.1
    error = np.abs(bf16 - fp32)
    assert 0 < error.max() < 0.05 * spread  # bf16 really ran, and rounded only (measured 2.5%)
    assert np.corrcoef(fp32[:, 0], bf16[:, 0])[0, 1] > 0.999


def test_bf16_training_step_keeps_fp32_weights_and_a_close_gradient(real_smiles):
    batch = Batch.from_data_list(_graphs(real_smiles[:32]))
    batch.y = torch.linspace(-3.0, 1.0, 32).view(-1, 1)
    runs = {}
    for precision in ("fp32", "bf16"):
        predictor = _predictor()
        predictor.fit_targets(batch.y)
        optimizer = make_optimizer(predictor.parameters(), lr=1e-4, weight_decay=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(1, 10))
        guard = FiniteGuard(optimizer, "cpu")
        predictor.train()
        torch.manual_seed(1)  # the same dropout masks in both runs
        before = copy.deepcopy(predictor.state_dict())
        loss = train_step(predictor, batch, optimizer, scheduler, guard, 5.0, "cpu", "-", precision)
        # (the 3D relation and the pretraining heads take no part in a 2D fine-tuning step)
        grad = torch.cat([p.grad.reshape(-1) for p in predictor.parameters() if p.grad is not None])
        step = torch.cat(
            [(predictor.state_dict()[k] - v).reshape(-1).float() for k, v in before.items()]
        )
        assert all(p.dtype == torch.float32 for p in predictor.parameters())
        assert grad.dtype == torch.float32 and loss.dtype == torch.float32
        runs[precision] = loss, grad, step
    (loss32, grad32, step32), (loss16, grad16, step16) = runs["fp32"], runs["bf16"]
    assert loss16 != loss32 and abs(loss16 - loss32) < 0.01 * loss32
    cosine = torch.nn.functional.cosine_similarity
    assert cosine(grad16, grad32, dim=0) > 0.98
    assert cosine(step16, step32, dim=0) > 0.9  # AdamW's first step is sign-like


def test_finetune_and_pretrain_commands_run_in_bf16(tmp_path):
    assets = Path(__file__).parents[1] / "assets"
    args = ["finetune", "--csv", str(assets / "tiny_esol.csv"), "--targets", "logS"]
    args += ["--task", "regression", "--root", str(tmp_path / "data"), "--epochs", "2"]
    args += ["--batch-size", "16", "--device", "cpu", "--precision", "bf16"]
    assert main([*args, "--out", str(tmp_path / "ft")]) == 0
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["settings"]["precision"] == "bf16" and np.isfinite(metrics["test"])
    smiles = tmp_path / "corpus.smi"
    smiles.write_text("\n".join(["CCO", "CCN", "c1ccccc1O", "CC(=O)O", "CCCl", "CCOC"]))
    args = ["pretrain", "--smiles", str(smiles), "--steps", "2", "--batch-size", "3"]
    args += ["--warmup-steps", "1", "--device", "cpu", "--precision", "bf16"]
    assert main([*args, "--out", str(tmp_path / "pt")]) == 0
    log = [json.loads(line) for line in (tmp_path / "pt" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(np.isfinite(r["loss"]) for r in log)
    payload = torch.load(tmp_path / "pt" / "checkpoint.pt", weights_only=True)
    assert payload["config"]["precision"] == "bf16"
    assert all(v.dtype != torch.bfloat16 for v in payload["encoder_state"].values())


needs_onednn_switch = pytest.mark.skipif(
    not utils._onednn_switch_available(),
    reason="a torch without torch.backends.mkldnn.matmul.fp32_precision",
)


@pytest.fixture
def fresh_onednn_check():
    check = utils.onednn_fp32_matmul  # the cached original (tests may patch the name)
    check.cache_clear()
    yield utils
    check.cache_clear()


@needs_onednn_switch
def test_onednn_fp32_products_only_off_intel_and_only_when_exact(monkeypatch, fresh_onednn_check):
    utils = fresh_onednn_check
    monkeypatch.setattr(utils.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.mkl, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(utils, "_onednn_matmul_exact", lambda: True)
    for vendor, expected in (("AuthenticAMD", True), ("GenuineIntel", False), (None, False)):
        monkeypatch.setattr(utils, "_cpu_vendor", lambda vendor=vendor: vendor)
        utils.onednn_fp32_matmul.cache_clear()
        assert utils.onednn_fp32_matmul() is expected, vendor
    monkeypatch.setattr(utils, "_cpu_vendor", lambda: "AuthenticAMD")
    monkeypatch.setattr(utils, "_onednn_matmul_exact", lambda: False)  # oneDNN rounds: MKL stays
    utils.onednn_fp32_matmul.cache_clear()
    assert utils.onednn_fp32_matmul() is False
    monkeypatch.setattr(utils, "_onednn_matmul_exact", lambda: True)
    monkeypatch.setattr(utils.platform, "machine", lambda: "arm64")
    utils.onednn_fp32_matmul.cache_clear()
    assert utils.onednn_fp32_matmul() is False
    monkeypatch.setattr(utils.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.mkldnn, "matmul", object())  # an older torch: no switch
    utils.onednn_fp32_matmul.cache_clear()
    assert utils.onednn_fp32_matmul() is False


@needs_onednn_switch
def test_onednn_exactness_probe_catches_bf16_arithmetic(monkeypatch, fresh_onednn_check):
    utils = fresh_onednn_check
    if not torch.backends.mkldnn.is_available():
        pytest.skip("torch built without oneDNN")
    # Whatever library computes them, float32 products are exact on these inputs.
    assert utils._onednn_matmul_exact()
    mm = torch.mm

    def bf16_mm(a, b):  # what a kernel that rounds its inputs to bf16 would give
        return mm(a.bfloat16().float(), b.bfloat16().float())

    monkeypatch.setattr(torch, "mm", bf16_mm)
    assert not utils._onednn_matmul_exact()


@needs_onednn_switch
def test_fp32_scope_sets_the_onednn_switch_and_restores_it(monkeypatch, fresh_onednn_check):
    utils = fresh_onednn_check
    flag = torch.backends.mkldnn.matmul
    before = flag.fp32_precision
    monkeypatch.setattr(utils, "onednn_fp32_matmul", lambda: True)
    with precision_scope("fp32", "cpu"):
        assert flag.fp32_precision == "bf16"
    assert flag.fp32_precision == before
    with pytest.raises(RuntimeError, match="inside"):
        with precision_scope("fp32", "cpu"):
            raise RuntimeError("inside")
    assert flag.fp32_precision == before
    for precision, device in (("fp32", "cuda"), ("bf16", "cpu")):  # not its business there
        with precision_scope(precision, device):
            assert flag.fp32_precision == before
    monkeypatch.setattr(utils, "onednn_fp32_matmul", lambda: False)  # an Intel CPU
    with precision_scope("fp32", "cpu"):
        assert flag.fp32_precision == before


@needs_onednn_switch
def test_training_and_prediction_run_their_products_in_the_scope(
    monkeypatch, fresh_onednn_check, real_smiles
):
    # Whatever the CPU, the switch is on inside a fine-tuning step's forward and backward
    # passes and a prediction's forward pass when the check holds, and off after them.
    utils = fresh_onednn_check
    monkeypatch.setattr(utils, "onednn_fp32_matmul", lambda: True)
    flag = torch.backends.mkldnn.matmul
    before = flag.fp32_precision
    seen = []
    predictor = _predictor()
    predictor.head.register_forward_hook(lambda *_: seen.append(flag.fp32_precision))
    predictor.head.register_full_backward_hook(lambda *_: seen.append(flag.fp32_precision))
    batch = Batch.from_data_list(_graphs(real_smiles[:8]))
    batch.y = torch.linspace(-1.0, 1.0, 8).view(-1, 1)
    predictor.fit_targets(batch.y)
    optimizer = make_optimizer(predictor.parameters(), lr=1e-4, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(1, 10))
    guard = FiniteGuard(optimizer, "cpu")
    train_step(predictor, batch, optimizer, scheduler, guard, 5.0, "cpu", "-")
    predict(predictor, _graphs(real_smiles[:8]), batch_size=4)
    assert seen == ["bf16"] * 4  # forward, backward, two prediction batches
    assert flag.fp32_precision == before


def test_fp32_scope_keeps_float32_arithmetic_on_this_cpu(real_smiles):
    # Inside the scope products may go through oneDNN (onednn_fp32_matmul); whichever
    # library runs them, a training step's loss and gradient match float64's to float32
    # rounding, far inside bf16's (about 3 significant digits).
    batch = Batch.from_data_list(_graphs(real_smiles[:32]))
    batch.y = torch.linspace(-3.0, 1.0, 32).view(-1, 1)
    results = {}
    for dtype in (torch.float32, torch.float64):
        predictor = _predictor().to(dtype).eval()  # no dropout: the same function twice
        predictor.fit_targets(batch.y.to(dtype))
        with precision_scope("fp32", "cpu"):
            dense = dense_batch(batch, "cpu", predictor.encoder.max_hops)
            floats = {
                field.name: value.to(dtype)
                for field in dataclasses.fields(dense)
                if isinstance(value := getattr(dense, field.name), torch.Tensor)
                and value.is_floating_point()
            }
            dense = dataclasses.replace(dense, **floats)
            loss = predictor.loss(batch, predictor(dense))
            loss.backward()
        grad = torch.cat([p.grad.reshape(-1) for p in predictor.parameters() if p.grad is not None])
        results[dtype] = loss.detach().double(), grad.double()
    (loss32, grad32), (loss64, grad64) = results[torch.float32], results[torch.float64]
    assert abs(loss32 - loss64) < 1e-5 * abs(loss64)
    assert (grad32 - grad64).norm() < 1e-4 * grad64.norm()
