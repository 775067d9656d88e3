"""The CUDA path gives the CPU path's results. Skipped without a CUDA device (CI has
none); run on a GPU machine with ``pytest tests/test_cuda.py``."""

from __future__ import annotations

import math

import pytest
import torch
from torch_geometric.data import Batch

from pyg_molblend.data import from_smiles, to_dense
from pyg_molblend.functional import shortest_path
from pyg_molblend.models import MoleBlend, MoleBlendPredictor
from pyg_molblend.training.checkpoint import PRETRAINED_PATH, load_encoder
from pyg_molblend.training.finetune import FinetuneConfig, finetune
from pyg_molblend.transforms import AddConformer, AddShortestPath

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# rings, a charged salt (two fragments), a macrocycle-ish chain, a one-atom molecule
SMILES = [
    "CC(=O)Oc1ccccc1C(=O)O",
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "[Na+].[O-]C(=O)c1ccccc1",
    "OCCOCCOCCOCCOCCO",
    "C",
    "c1ccc2c(c1)ccc1ccccc12",
    "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
    "O=C1CCCN1",
]


def _graphs(conformers: bool = False) -> list:
    graphs = [from_smiles(s) for s in SMILES]
    if conformers:
        graphs = [AddConformer(seed=0)(g) for g in graphs]
    return graphs


def test_shortest_path_kernel_on_cuda_matches_cpu():
    batch = Batch.from_data_list(_graphs())
    spd, path = shortest_path(batch.edge_index, batch.ptr)
    spd_cuda, path_cuda = shortest_path(batch.edge_index.cuda(), batch.ptr.cuda())
    assert spd_cuda.is_cuda and path_cuda.is_cuda
    assert torch.equal(spd_cuda.cpu(), spd) and torch.equal(path_cuda.cpu(), path)


def test_to_dense_on_cuda_equals_precomputed_pairs():
    precomputed = to_dense(Batch.from_data_list([AddShortestPath()(g) for g in _graphs()]))
    on_the_fly = to_dense(Batch.from_data_list(_graphs(conformers=True)).to("cuda"))
    assert on_the_fly.spd.is_cuda
    assert torch.equal(on_the_fly.spd.cpu(), precomputed.spd)
    assert torch.equal(on_the_fly.path_edge.cpu(), precomputed.path_edge)
    assert torch.equal(on_the_fly.mask.cpu(), precomputed.mask)
    pos = on_the_fly.pos.cpu()
    dist = (
        torch.cdist(pos, pos)
        * on_the_fly.mask.cpu()[:, :, None]
        * on_the_fly.mask.cpu()[:, None, :]
    )
    assert torch.allclose(on_the_fly.dist.cpu(), dist, atol=1e-4)


@pytest.mark.parametrize("mode", ["2d", "3d", "2d+3d"])
def test_encoder_on_cuda_matches_cpu(mode):
    torch.manual_seed(0)
    model = MoleBlend.from_preset("small").eval()
    batch = Batch.from_data_list(_graphs(conformers=True))
    with torch.no_grad():
        cpu = model.encode(batch, mode)
        cuda = model.cuda().encode(batch.to("cuda"), mode)
        # The graph token alone in the last layer (SDPA with one query row).
        graph_only = model.encode(batch.to("cuda"), mode, nodes=False).graph
    assert cuda.graph.is_cuda
    assert torch.allclose(cuda.graph.cpu(), cpu.graph, atol=1e-4, rtol=1e-3)
    assert torch.allclose(cuda.node.cpu(), cpu.node, atol=1e-4, rtol=1e-3)
    assert torch.allclose(graph_only.cpu(), cpu.graph, atol=1e-4, rtol=1e-3)


def test_pair_cross_entropy_on_cuda_matches_cpu():
    from pyg_molblend.nn import PairHead

    torch.manual_seed(0)
    head = PairHead(channels=16, out_channels=2 * 60, hidden_channels=8)
    with torch.no_grad():
        head.head.bias.normal_()
    x = torch.randn(4, 9, 16)
    labels = torch.randint(0, 60, (4, 9, 9, 2))
    labels[torch.rand(4, 9, 9, 2) < 0.3] = -100
    results = []
    for device in ("cpu", "cuda"):
        head.to(device).zero_grad()
        loss, acc = head.cross_entropy(x.to(device), labels.to(device), 60)
        loss.backward()
        grads = [p.grad.cpu() for p in head.parameters()]
        results.append((loss.cpu(), acc.cpu(), grads))
    (loss, acc, grads), (loss_cuda, acc_cuda, grads_cuda) = results
    assert torch.allclose(loss_cuda, loss, atol=1e-5) and torch.equal(acc_cuda, acc)
    for grad, grad_cuda in zip(grads, grads_cuda, strict=True):
        assert torch.allclose(grad_cuda, grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_pretraining_step_on_cuda_has_finite_loss_and_gradients(precision):
    from pyg_molblend.training.utils import autocast, precision_scope

    torch.manual_seed(0)
    model = MoleBlend.from_preset("small").cuda().train()
    batch = Batch.from_data_list([AddShortestPath()(g) for g in _graphs(conformers=True)])
    generator = torch.Generator(device="cuda").manual_seed(0)
    with precision_scope(precision, "cuda"), autocast(precision, "cuda"):
        out = model.pretrain_loss(batch.to("cuda"), "blend", generator=generator)
    assert out.loss.dtype == torch.float32
    loss, terms = out.loss, out.parts
    assert loss.is_cuda and math.isfinite(loss.item())
    assert all(t is None or math.isfinite(float(t)) for t in terms.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)


def test_finetune_from_shipped_weights_on_cuda():
    graphs = []
    for i, g in enumerate(_graphs() * 4):
        g = AddShortestPath()(g)
        g.y = torch.tensor([[float(i % 2), float(g.num_nodes > 10)]])
        graphs.append(g)
    encoder = load_encoder(str(PRETRAINED_PATH))
    predictor = MoleBlendPredictor(encoder, 2, "classification", mode="2d")
    config = FinetuneConfig(epochs=2, batch_size=8, lr=1e-4, device="cuda", progress=False)
    result = finetune(predictor, graphs[:24], graphs[24:28], graphs[28:], config)
    assert next(predictor.parameters()).is_cuda
    assert result.best_epoch in (1, 2)
    assert all(math.isfinite(v) for v in result.valid.values())


@pytest.mark.parametrize(
    "task, precision",
    [
        ("classification", "fp32"),
        ("regression", "fp32"),
        ("regression", "tf32"),
        ("classification", "bf16"),
    ],
)
def test_finetune_step_on_cuda_never_waits_for_the_device(task, precision):
    """The training step (densify, forward, loss, backward, clipping, the finiteness
    guard, the fused optimizer and the schedule) runs without a host synchronisation."""
    from torch_geometric.loader import DataLoader

    from pyg_molblend.training.finetune import train_step
    from pyg_molblend.training.utils import FiniteGuard, make_optimizer

    graphs = []
    for i, g in enumerate(_graphs() * 4):
        g = AddShortestPath()(g)
        g.y = torch.tensor([[float(i % 2), math.nan if i % 3 else float(g.num_nodes > 10)]])
        graphs.append(g)
    predictor = MoleBlendPredictor(load_encoder(str(PRETRAINED_PATH)), 2, task).cuda().train()
    optimizer = make_optimizer(predictor.parameters(), 1e-4, 0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    guard = FiniteGuard(optimizer, "cuda")
    batches = list(DataLoader(graphs, batch_size=8, pin_memory=True))
    args = (optimizer, scheduler, guard, 5.0, "cuda", "", precision)
    train_step(predictor, batches[0], *args)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = [train_step(predictor, batch, *args) for batch in batches[1:]]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    guard.flush()
    assert all(math.isfinite(loss.item()) for loss in losses)


def test_bf16_and_tf32_predictions_on_cuda_follow_fp32():
    from pyg_molblend.training.finetune import predict

    torch.manual_seed(0)
    predictor = MoleBlendPredictor(load_encoder(str(PRETRAINED_PATH)), 1, "regression")
    with torch.no_grad():
        predictor.head[-1].weight.mul_(50.0)
    graphs = [AddShortestPath()(g) for g in _graphs()] * 4
    predictor.cuda()
    fp32 = predict(predictor, graphs, 8, "cuda")
    spread = fp32.std()
    for precision, bound in (("tf32", 0.02), ("bf16", 0.05)):
        other = predict(predictor, graphs, 8, "cuda", precision=precision)
        assert abs(other - fp32).max() < bound * spread, precision
    assert not torch.backends.cuda.matmul.allow_tf32  # the scope restored torch's default


def test_compiled_layers_on_cuda_follow_eager():
    """``--compile`` on CUDA (inductor's Triton kernels, dynamic shapes): the losses and
    gradients of a pretraining and a graph-level pass follow the eager layers', and a
    batch of another size runs through the same compiled layers."""
    import copy

    from pyg_molblend.training.utils import compile_layers

    torch.manual_seed(0)
    no_noise = dict(attn_dropout=0.0, activation_dropout=0.0, drop_path=0.0)
    eager = MoleBlend.from_preset("small", **no_noise).cuda()
    compiled = compile_layers(copy.deepcopy(eager))
    graphs = _graphs(conformers=True)
    for batch in (Batch.from_data_list(graphs).cuda(), Batch.from_data_list(graphs[:5]).cuda()):
        losses, grads = [], []
        for model in (eager, compiled):
            model.zero_grad()
            torch.manual_seed(1)  # the blend's per-pair modality draw
            loss = model.pretrain_loss(batch, mode="blend").loss
            loss = loss + model(batch, mode="2d").square().sum()
            loss.backward()
            losses.append(loss.item())
            grads.append(
                torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
            )
        assert math.isfinite(losses[0]) and losses[1] == pytest.approx(losses[0], rel=1e-4)
        assert (grads[1] - grads[0]).norm() <= 1e-3 * grads[0].norm()
