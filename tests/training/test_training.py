"""Training-loop pieces: the finiteness guard, losses without host synchronisation, and
predictions restored to dataset order from size-sorted batches."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyg_molblend.data import from_smiles
from pyg_molblend.models import MoleBlend, MoleBlendPredictor
from pyg_molblend.training.finetune import predict
from pyg_molblend.training.utils import (
    MALLOC_ENVIRONMENT,
    FiniteGuard,
    make_optimizer,
    tune_malloc,
)
from pyg_molblend.transforms import AddShortestPath


def test_deferred_guard_skips_the_bad_step_and_names_it():
    """What the guard does on an accelerator, checked on the CPU: the fused optimizer
    leaves the weights alone on a non-finite step, later steps go on, and flush raises
    naming the first bad step."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 1)
    optimizer = make_optimizer(layer.parameters(), 0.1, 0.0)
    guard = FiniteGuard(optimizer, "cpu")
    guard.deferred = True
    x = torch.randn(4, 3)
    for step, scale in enumerate([1.0, math.nan, 1.0], start=1):
        before = [p.detach().clone() for p in layer.parameters()]
        optimizer.zero_grad()
        loss = layer(x).square().mean() * scale
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(layer.parameters(), 5.0)
        guard.check(loss, grad_norm, step, 0.1, "nothing was saved")
        optimizer.step()
        changed = any(
            not torch.equal(a, b) for a, b in zip(before, layer.parameters(), strict=True)
        )
        assert changed == (step != 2)
        assert all(bool(torch.isfinite(p).all()) for p in layer.parameters())
    with pytest.raises(ValueError, match=r"diverged at step 2: loss nan.*nothing was saved"):
        guard.flush()


def test_immediate_guard_on_cpu_raises_before_the_step():
    layer = torch.nn.Linear(2, 1)
    guard = FiniteGuard(make_optimizer(layer.parameters(), 0.1, 0.0), "cpu")
    loss = torch.tensor(math.inf)
    with pytest.raises(ValueError, match="diverged at step 7: loss inf"):
        guard.check(loss, torch.tensor(1.0), 7, 0.1, "kept")
    guard.flush()  # nothing deferred


def test_predict_restores_dataset_order(real_smiles):
    graphs = [AddShortestPath()(from_smiles(s)) for s in real_smiles[:40]]
    torch.manual_seed(0)
    predictor = MoleBlendPredictor(MoleBlend.from_preset("small"), 2, "regression").eval()
    batched = predict(predictor, graphs, batch_size=8)  # size-sorted batches of 8
    one_by_one = np.concatenate([predict(predictor, [g], batch_size=1) for g in graphs])
    assert batched.shape == (40, 2)
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-4, atol=1e-5)
    assert predict(predictor, [], batch_size=8).shape == (0, 2)


def test_pretrain_keeps_weight_snapshots_and_clears_stale_ones(tmp_path):
    from pyg_molblend.training.checkpoint import load_checkpoint, load_encoder
    from pyg_molblend.training.pretrain import PretrainConfig, pretrain

    corpus = [from_smiles(s) for s in ["CCO", "CCN", "CCC", "CCCl", "c1ccccc1", "CC(=O)O"]]
    config = PretrainConfig(
        steps=6, batch_size=2, warmup_steps=1, save_every=3, keep_every=2, progress=False
    )
    out = tmp_path / "run"
    torch.manual_seed(0)
    pretrain(MoleBlend.from_preset("small"), corpus, out, config)
    snaps = out / "snapshots"
    assert sorted(p.name for p in snaps.iterdir()) == [
        "step_0000002.pt",
        "step_0000004.pt",
        "step_0000006.pt",
    ]
    final = load_checkpoint(out / "checkpoint.pt", kind="pretrain")
    kept = {
        step: load_checkpoint(snaps / f"step_{step:07d}.pt", kind="pretrain") for step in (2, 4, 6)
    }
    # Weights only, with what picking among them needs.
    assert "optimizer" not in kept[2] and "rng" not in kept[2]
    assert [kept[s]["step"] for s in (2, 4, 6)] == [2, 4, 6]
    assert kept[2]["data_fingerprint"] == final["data_fingerprint"]
    for name, value in final["encoder_state"].items():
        assert torch.equal(kept[6]["encoder_state"][name], value)
    changed = [
        name
        for name, value in kept[2]["encoder_state"].items()
        if not torch.equal(value, kept[4]["encoder_state"][name])
    ]
    assert changed  # step 2 is not step 4
    encoder = load_encoder(snaps / "step_0000004.pt")
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, kept[4]["encoder_state"][name])

    # A resumed run redoes the steps after its checkpoint: their snapshots are removed
    # (here a leftover of step 8 from a run that went past its last checkpoint).
    (snaps / "step_0000008.pt").write_bytes((snaps / "step_0000006.pt").read_bytes())
    pretrain(MoleBlend.from_preset("small"), corpus, out, config, resume=True)
    assert sorted(p.name for p in snaps.iterdir())[-1] == "step_0000006.pt"
    # Starting afresh keeps none of the earlier run's snapshots.
    (snaps / "step_0000099.pt").write_bytes(b"old")
    fresh = PretrainConfig(steps=2, batch_size=2, warmup_steps=1, keep_every=1, progress=False)
    pretrain(MoleBlend.from_preset("small"), corpus, out, fresh, overwrite=True)
    assert sorted(p.name for p in snaps.iterdir()) == ["step_0000001.pt", "step_0000002.pt"]
    with pytest.raises(ValueError, match="keep_every must be positive"):
        PretrainConfig(keep_every=0)


_MALLOC_PROBE = """
import ctypes, json, resource, sys, torch
from pyg_molblend.training.utils import tune_malloc
applied = tune_malloc() if sys.argv[1] == "tuned" else None
class MallInfo(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
mallinfo = ctypes.CDLL(None).mallinfo
mallinfo.restype = MallInfo
before = mallinfo().hblkhd
block = torch.ones(5_000_000)  # the process's first block of 20 MB
mapped = mallinfo().hblkhd - before
del block
def step():  # a training step's activations: 16 blocks of 10 MB, written, then freed
    blocks = [torch.ones(2_500_000) for _ in range(16)]
    del blocks
for _ in range(3):  # warm-up (the heap may grow once by a block, around small objects)
    step()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
print(json.dumps(
    {"applied": applied, "mapped": mapped, "faults": faults, "free_heap": mallinfo().fordblks}
))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_tune_malloc_keeps_a_steps_freed_memory_for_the_next(tmp_path):
    """In a fresh process glibc maps a first block of 20 MB on its own (its threshold
    starts at 128 KiB and only adapts after such a block is freed) and unmaps it on free;
    after tune_malloc it comes from the heap. Then ten 'steps' that each write and free
    160 MB, after three to warm up: after tune_malloc the memory stays in the heap, free
    (at most 256 MiB is kept), and no page is faulted again. (Without it the faults depend
    on where small objects landed in the heap: about 390,000 in most runs, none in some,
    so only the tuned process's faults are asserted.)"""
    script = tmp_path / "probe.py"
    script.write_text(_MALLOC_PROBE)
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENVIRONMENT}
    result = {}
    for mode in ("default", "tuned"):
        done = subprocess.run(
            [sys.executable, str(script), mode],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        result[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["default"]["mapped"] >= 20_000_000
    assert result["tuned"]["applied"] is True
    assert result["tuned"]["mapped"] == 0
    assert result["tuned"]["free_heap"] >= 160_000_000
    assert result["tuned"]["faults"] < 1_000


def test_tune_malloc_leaves_a_users_settings_and_checks_its_arguments(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    assert tune_malloc() is False
    message = re.escape("trim_threshold must be in [0, 2**31) bytes, got 4294967296")
    with pytest.raises(ValueError, match=message):
        tune_malloc(trim_threshold=1 << 32)


def test_checkpoints_without_edge_target_load_and_resume_as_joint(tmp_path):
    """Pretraining checkpoints written before ``edge_target`` existed (the shipped
    weights among them) hold a 60-class joint edge head: they load as ``"joint"``, and
    resuming one with the factored default names the difference instead of failing on
    the head's shape."""
    from pyg_molblend.training.checkpoint import load_encoder
    from pyg_molblend.training.pretrain import PretrainConfig, pretrain

    shipped = load_encoder("pretrained")
    assert shipped.edge_target == "joint" and shipped.edge_head.out_channels == 5 * 60
    assert MoleBlend.from_preset("small").edge_head.out_channels == 5 * 16

    corpus = [from_smiles(s) for s in ["CCO", "CCN", "C=CC#N", "c1ccccc1"]]
    config = PretrainConfig(steps=2, batch_size=2, warmup_steps=1, save_every=1, progress=False)
    out = tmp_path / "run"
    pretrain(MoleBlend.from_preset("small", edge_target="joint"), corpus, out, config)
    path = out / "checkpoint.pt"
    payload = torch.load(path, weights_only=False)
    del payload["encoder_config"]["edge_target"]  # as an older version wrote it
    torch.save(payload, path)
    assert load_encoder(path).edge_target == "joint"
    with pytest.raises(ValueError, match=r"model edge_target 'joint' \(this run: 'factored'\)"):
        pretrain(MoleBlend.from_preset("small"), corpus, out, config, resume=True)
    # The same run resumes with the joint head it was written with (nothing left to do).
    again = MoleBlend.from_preset("small", edge_target="joint")
    pretrain(again, corpus, out, config, resume=True)
    saved = load_encoder(path).state_dict()
    assert all(torch.equal(again.state_dict()[k], v) for k, v in saved.items())
