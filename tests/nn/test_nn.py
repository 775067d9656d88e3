import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch

from pyg_molblend import BlendedGraphTransformer
from pyg_molblend.constants import SPD_PAD, SPD_UNREACHABLE
from pyg_molblend.data import from_smiles, to_dense
from pyg_molblend.nn import (
    DIST,
    EDGE,
    SPD,
    AtomEncoder,
    DenoiseHead,
    DropPath,
    EdgePathBias,
    GaussianDistanceBias,
    ModalityBlend,
    PairHead,
    SPDBias,
)


def test_spd_bias_by_hand():
    enc = SPDBias(heads=2, max_distance=3)
    with torch.no_grad():
        enc.table.weight.copy_(torch.arange(12, dtype=torch.float).view(6, 2))
        enc.table.weight[0] = 0.0  # the padding row
    spd = torch.tensor([[[0, 1, 5], [SPD_UNREACHABLE, 2, SPD_PAD]]])
    out = enc(spd)  # rows: pad 0, d=0 ->1, 1->2, 2->3, 3+->4, unreachable 5
    assert out.shape == (1, 2, 2, 3)
    assert out[0, 0].tolist() == [[2, 4, 8], [10, 6, 0]]
    assert out[0, 1].tolist() == [[3, 5, 9], [11, 7, 0]]


def test_spd_bias_flat_gather_equals_embedding_lookup_and_gradient():
    # On the CPU SPDBias gathers single entries (a cheaper backward); the values and the
    # gradient must be nn.Embedding's, the padding row included (no gradient, output 0).
    torch.manual_seed(0)
    enc = SPDBias(heads=8, max_distance=20)
    with torch.no_grad():
        enc.table.weight[0] = 5.0  # even a non-zero padding row must not show
    dense = to_dense(
        Batch.from_data_list([from_smiles(s) for s in ["CCO", "c1ccccc1O", "[Na+].[Cl-]"]])
    )
    assert (dense.spd == SPD_PAD).any() and (dense.spd == SPD_UNREACHABLE).any()
    grad = torch.randn(3, 8, *dense.spd.shape[1:])
    out = enc(dense.spd)
    (got,) = torch.autograd.grad(out, enc.table.weight, grad)
    index = dense.spd.clamp(max=20) + 1
    index = torch.where(dense.spd == SPD_UNREACHABLE, 22, index).masked_fill(
        dense.spd == SPD_PAD, 0
    )
    weight = enc.table.weight.detach().clone().requires_grad_()
    expected = F.embedding(index, weight, padding_idx=0).permute(0, 3, 1, 2)
    expected = expected * (index != 0).unsqueeze(1)  # padded pairs: 0, as documented
    (expected_grad,) = torch.autograd.grad(expected, weight, grad)
    assert torch.equal(out, expected)
    assert torch.allclose(got, expected_grad, atol=1e-5) and (got[0] == 0).all()


def test_gather_rows_equals_indexing_and_its_gradient():
    from pyg_molblend.nn.encoders import gather_rows

    torch.manual_seed(0)
    table = torch.randn(7, 3, requires_grad=True)
    index = torch.randint(0, 7, (4, 5))
    grad = torch.randn(4, 5, 3)
    (got,) = torch.autograd.grad(gather_rows(table, index), table, grad)
    (expected,) = torch.autograd.grad(table[index], table, grad)
    assert torch.equal(gather_rows(table, index), table[index])
    assert torch.allclose(got, expected, atol=1e-6)


def test_edge_path_bias_by_hand():
    dense = to_dense(Batch.from_data_list([from_smiles("C=CC")]))
    enc = EdgePathBias(heads=1, max_hops=2)
    with torch.no_grad():
        enc.edge.table.weight.zero_()
        enc.edge.table.weight[1:6, 0] = torch.tensor([3.0, 6.0, 9.0, 12.0, 15.0])  # bond type
        enc.hop_weight.copy_(torch.tensor([[[1.0]], [[10.0]]]))
    path = dense.path_edge[..., :2]
    out = enc(path, dense.edge_attr, dense.spd)
    # Bond types: C0=C1 double (row 2 -> 6), C1-C2 single (row 1 -> 3); the other two
    # features embed to 0, so the mean over 3 features is 2 resp. 1.
    assert out[0, 0, 0, 1].item() == pytest.approx(2.0)
    assert out[0, 0, 1, 2].item() == pytest.approx(1.0)
    # 0 -> 2: hop 1 double (2 * 1), hop 2 single (1 * 10), divided by distance 2.
    assert out[0, 0, 0, 2].item() == pytest.approx((2.0 + 10.0) / 2)
    assert out[0, 0, 1, 1].item() == 0.0


def test_gaussian_basis_matches_formula_and_masks():
    enc = GaussianDistanceBias(heads=4, channels=8, num_kernels=5)
    dist = torch.tensor([[[0.0, 1.5], [1.5, 0.0]]])
    z = torch.tensor([[5, 7]])
    phi = enc.basis(dist, z)
    mul = enc.mul.weight[5, 0] + enc.mul.weight[119 + 7, 0]
    shift = enc.bias.weight[5, 0] + enc.bias.weight[119 + 7, 0]
    x = mul * 1.5 + shift
    std = enc.std.abs() + 0.01
    expected = torch.exp(-0.5 * ((x - enc.mean) / std) ** 2) / (math.sqrt(2 * math.pi) * std)
    assert torch.allclose(phi[0, 0, 1], expected)
    mask = torch.tensor([[[True, False], [False, False]]])
    bias, atom = enc(dist, z, mask)
    assert bias.shape == (1, 4, 2, 2) and (bias[0, :, 0, 1] == 0).all()
    assert torch.allclose(atom[0, 1], enc.atom_proj.bias)  # no real partner: phi sum is 0

    # the gradients are the formula's too (the basis is evaluated in a fused form)
    weights = torch.randn(5)
    (phi[0, 0, 1] * weights).sum().backward()
    fused = [enc.mean.grad.clone(), enc.std.grad.clone()]
    enc.zero_grad()
    (expected * weights).sum().backward()
    for got, want in zip(fused, [enc.mean.grad, enc.std.grad], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_gaussian_bias_is_rotation_and_translation_invariant():
    from pyg_molblend.functional import pairwise_distance

    pos = torch.randn(1, 6, 3)
    q, _ = torch.linalg.qr(torch.randn(3, 3))
    moved = pos @ q.T + torch.tensor([1.0, -2.0, 0.5])
    enc = GaussianDistanceBias(heads=2, channels=4, num_kernels=8)
    z = torch.randint(0, 10, (1, 6))
    mask = torch.ones(1, 6, 6, dtype=torch.bool)
    a, fa = enc(pairwise_distance(pos), z, mask)
    b, fb = enc(pairwise_distance(moved), z, mask)
    assert torch.allclose(a, b, atol=1e-4) and torch.allclose(fa, fb, atol=1e-4)


@pytest.mark.parametrize("block_bytes", [1, 4 * 8 * 6 * 6 * 2])
def test_gaussian_bias_in_chunks_equals_one_piece(block_bytes):
    """Encoded a molecule at a time (1 byte) or two at a time (3 molecules, 8 kernels, 6
    atoms): the same bias, atom feature and parameter gradients as in one piece."""
    from pyg_molblend.functional import pairwise_distance

    torch.manual_seed(0)
    enc = GaussianDistanceBias(heads=2, channels=4, num_kernels=8)
    dist = pairwise_distance(torch.randn(3, 6, 3))
    z = torch.randint(0, 10, (3, 6))
    mask = torch.ones(3, 6, 6, dtype=torch.bool)
    mask[2, 4:] = mask[2, :, 4:] = False  # a smaller third molecule
    weight = torch.randn(3, 2, 6, 6), torch.randn(3, 6, 4)
    results = []
    for budget in (GaussianDistanceBias.block_bytes, block_bytes):
        enc.block_bytes = budget
        bias, atom = enc(dist, z, mask)
        grads = torch.autograd.grad(
            (bias * weight[0]).sum() + (atom * weight[1]).sum(), list(enc.parameters())
        )
        results.append((bias, atom, grads))
    (bias, atom, grads), (chunked_bias, chunked_atom, chunked_grads) = results
    torch.testing.assert_close(chunked_bias, bias)
    torch.testing.assert_close(chunked_atom, atom)
    for got, want in zip(chunked_grads, grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block_bytes", [1, 4 * 2 * 3 * 5 * 5 * 2])
def test_denoise_head_in_chunks_equals_one_piece(block_bytes):
    """A molecule at a time (1 byte) or two at a time (3 molecules, 2 heads, 5 atoms), in
    eval mode: the same predicted noise and parameter gradients as in one piece."""
    torch.manual_seed(0)
    head = DenoiseHead(channels=8, heads=2).eval()
    x, bias = torch.randn(3, 5, 8), torch.randn(3, 2, 5, 5)
    pos = torch.randn(3, 5, 3)
    delta = pos.unsqueeze(1) - pos.unsqueeze(2)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 3:] = False
    weight = torch.randn(3, 5, 3)
    results = []
    for budget in (DenoiseHead.block_bytes, block_bytes):
        head.block_bytes = budget
        out = head(x, bias, delta, mask)
        results.append((out, torch.autograd.grad((out * weight).sum(), list(head.parameters()))))
    (out, grads), (chunked, chunked_grads) = results
    torch.testing.assert_close(chunked, out)
    for got, want in zip(chunked_grads, grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_atom_encoder_rejects_out_of_vocabulary():
    enc = AtomEncoder(4)
    x = from_smiles("CCO").x.clone()
    x[1, 2] = 12  # degree vocabulary has 12 entries (0..11)
    with pytest.raises(ValueError, match="12"):
        enc(x)


def _relations(batch_size=3, n=7, heads=2, channels=4):
    g = torch.Generator().manual_seed(1)
    spd, edge, dist = (torch.randn(batch_size, heads, n, n, generator=g) for _ in range(3))
    degree, atom = (torch.randn(batch_size, n, channels, generator=g) for _ in range(2))
    mask = torch.ones(batch_size, n, dtype=torch.bool)
    return spd, edge, dist, degree, atom, mask


def test_blend_modes_combine_relations():
    spd, edge, dist, degree, atom, mask = _relations()
    has_pos = torch.tensor([True, True, False])
    blend = ModalityBlend()
    out = blend("2d+3d", spd, edge, dist, degree, atom, has_pos, mask)
    assert torch.equal(out.bias[:2], (spd + edge + dist)[:2])
    assert torch.equal(out.bias[2], (spd + edge)[2])  # no 3D: 2D relations, not zeros
    assert out.fallback.tolist() == [False, False, True] and out.num_fallback == 1
    assert torch.allclose(out.node[:2], (degree + 0.01 * atom)[:2])
    two = blend("2d", spd, edge, None, degree, None, has_pos, mask)
    assert torch.equal(two.bias, spd + edge) and two.num_fallback == 0
    three = blend("3d", spd, edge, dist, degree, atom, has_pos, mask)
    assert torch.equal(three.bias[:2], dist[:2]) and torch.equal(three.bias[2], (spd + edge)[2])
    assert torch.allclose(three.node[0], 0.01 * atom[0]) and torch.equal(three.node[2], degree[2])
    with pytest.raises(ValueError, match="mode"):
        blend("4d", spd, edge, dist, degree, atom, has_pos, mask)


def test_blend_takes_exactly_one_relation_per_pair():
    spd, edge, dist, degree, atom, mask = _relations()
    has_pos = torch.ones(3, dtype=torch.bool)
    out = ModalityBlend()(
        "blend",
        spd,
        edge,
        dist,
        degree,
        atom,
        has_pos,
        mask,
        generator=torch.Generator().manual_seed(0),
    )
    choice = out.pair_choice.unsqueeze(1).expand_as(spd)
    expected = torch.where(choice == SPD, spd, torch.where(choice == EDGE, edge, dist))
    assert torch.equal(out.bias, expected)
    node_expected = torch.where(out.atom_3d.unsqueeze(-1), 0.01 * atom, degree)
    assert torch.allclose(out.node, node_expected)


def test_realised_blend_ratio_and_seed():
    n = 64
    spd, edge, dist, degree, atom, mask = _relations(batch_size=8, n=n)
    has_pos = torch.ones(8, dtype=torch.bool)
    blend = ModalityBlend(ratio=(1, 1, 8), atom_2d_prob=0.25)
    a = blend(
        "blend", spd, edge, dist, degree, atom, has_pos, mask, torch.Generator().manual_seed(5)
    )
    b = blend(
        "blend", spd, edge, dist, degree, atom, has_pos, mask, torch.Generator().manual_seed(5)
    )
    assert torch.equal(a.pair_choice, b.pair_choice) and torch.equal(a.atom_3d, b.atom_3d)
    freq = torch.bincount(a.pair_choice.flatten(), minlength=3).float() / a.pair_choice.numel()
    assert torch.allclose(freq, torch.tensor([0.1, 0.1, 0.8]), atol=0.01)
    assert abs(a.atom_3d.float().mean().item() - 0.75) < 0.03
    # Per molecule by default; the reference's one matrix per batch on request.
    assert not torch.equal(a.pair_choice[0], a.pair_choice[1])
    shared = ModalityBlend(per_molecule=False)(
        "blend", spd, edge, dist, degree, atom, has_pos, mask
    )
    assert torch.equal(shared.pair_choice[0], shared.pair_choice[1])
    assert DIST == 2


def test_blend_ratio_validation():
    with pytest.raises(ValueError, match="ratio"):
        ModalityBlend(ratio=(1, -1, 2))
    with pytest.raises(ValueError, match=r"1\.5"):
        ModalityBlend(atom_2d_prob=1.5)


def _naive_attention(layer, x, bias, mask):
    b, n, c = x.shape
    h = layer.heads
    d = c // h
    q = layer.q_proj(x).view(b, n, h, d).transpose(1, 2)
    k = layer.k_proj(x).view(b, n, h, d).transpose(1, 2)
    v = layer.v_proj(x).view(b, n, h, d).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) / math.sqrt(d) + bias
    logits = logits.masked_fill(~mask.view(b, 1, 1, n), float("-inf"))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
    return layer.out_proj(out)


def test_layer_matches_naive_attention_and_masks_padding():
    layer = BlendedGraphTransformer(16, heads=4, ffn_channels=32).eval()
    x = torch.randn(2, 5, 16)
    bias = torch.randn(2, 4, 5, 5)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out = layer(x, bias, mask)
    ref = layer.attn_norm(x + _naive_attention(layer, x, bias, mask))
    ref = layer.ffn_norm(ref + layer.feed_forward(ref)) * mask.unsqueeze(-1)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.isfinite(out).all() and (out[1, 3:] == 0).all()
    # An all-padding sample gives zeros, not NaN.
    empty = layer(x, bias, torch.zeros(2, 5, dtype=torch.bool))
    assert torch.isfinite(empty).all() and (empty == 0).all()
    assert repr(layer) == "BlendedGraphTransformer(16, heads=4, ffn_channels=32, norm_first=False)"
    with pytest.raises(ValueError, match="divide"):
        BlendedGraphTransformer(10, heads=4)


@pytest.mark.parametrize("norm_first", [False, True])
def test_layer_queries_equal_the_first_rows_of_the_full_layer(norm_first):
    # num_queries=q computes the first q positions only, every position still a key: the
    # output and every parameter's gradient through it equal the full layer's first rows.
    torch.manual_seed(0)
    layer = BlendedGraphTransformer(16, heads=4, ffn_channels=32, norm_first=norm_first)
    layer.eval()
    x = torch.randn(3, 6, 16, dtype=torch.float64)
    bias = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] * 2 + [False] * 4])
    layer.double()
    for queries in (1, 2):
        head = layer(x, bias, mask, num_queries=queries)
        full = layer(x, bias, mask)
        assert head.shape == (3, queries, 16)
        assert torch.allclose(head, full[:, :queries], atol=1e-12)
        grads = torch.autograd.grad(head.square().sum(), list(layer.parameters()))
        ref = torch.autograd.grad(full[:, :queries].square().sum(), list(layer.parameters()))
        assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(grads, ref, strict=True))
    # A padded query position is zero, as in the full layer.
    assert (layer(x, bias, mask, num_queries=4)[2, 2:] == 0).all()


def test_drop_path_is_per_sample():
    torch.manual_seed(3)
    drop = DropPath(0.5).train()
    out = drop(torch.ones(200, 4, 3))
    per_sample = out.flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == 2).all(1)).all()
    assert 60 < int((per_sample[:, 0] == 0).sum()) < 140
    assert torch.equal(drop.eval()(torch.ones(3, 2)), torch.ones(3, 2))


def test_pair_head_equals_materialised_outer_product():
    head = PairHead(channels=12, out_channels=5, hidden_channels=4)
    x = torch.randn(2, 6, 12)
    row, col = head.factors(x)
    outer = (row.unsqueeze(2).unsqueeze(-1) * col.unsqueeze(1).unsqueeze(-2)).flatten(-2)
    expected = head.head(outer)  # [B, N, N, 16] -> [B, N, N, 5], flat index 4 * a + b
    assert torch.allclose(head(x), expected, atol=1e-5)


def test_pair_cross_entropy_gradients_pass_gradcheck():
    from pyg_molblend.nn.heads import PairCrossEntropy

    torch.manual_seed(0)
    left = torch.randn(2, 5, 4, 3, dtype=torch.double, requires_grad=True)
    col = torch.randn(2, 4, 3, dtype=torch.double, requires_grad=True)
    bias = torch.randn(5, dtype=torch.double, requires_grad=True)
    target = torch.randint(0, 5, (2, 4, 4))
    target[0, 1] = -100
    loss, correct = PairCrossEntropy.apply(left, col, bias, target)
    assert loss.dtype == torch.double  # scored in the inputs' precision, not cut to fp32
    logits = torch.einsum("boik,bjk->boij", left, col) + bias.view(1, 5, 1, 1)
    expected = torch.nn.functional.cross_entropy(logits, target, reduction="sum")
    assert torch.allclose(loss, expected, atol=1e-12)
    assert correct.item() == ((logits.argmax(1) == target) & (target != -100)).sum().item()
    assert torch.autograd.gradcheck(
        lambda *args: PairCrossEntropy.apply(*args, target)[0], (left, col, bias)
    )


def test_hop_sum_routes_match_advanced_indexing():
    from pyg_molblend.nn.encoders import hop_sum

    smiles = ["CC(=O)Oc1ccccc1C(=O)O", "C", "CCN(CC)CC", "c1ccc2ccccc2c1"]
    dense = to_dense(Batch.from_data_list([from_smiles(s) for s in smiles]), max_hops=4)
    path = dense.path_edge.reshape(-1, 4)
    assert (path >= 0).any() and (path < 0).any()
    torch.manual_seed(0)
    per_hop = torch.randn(4, dense.edge_attr.size(0), 3, requires_grad=True)
    grad = torch.randn(path.size(0), 3)
    padded = torch.cat([per_hop.new_zeros(4, 1, 3), per_hop], 1)
    expected = sum(padded[k][path[:, k] + 1] for k in range(4))
    (expected_grad,) = torch.autograd.grad(expected, per_hop, grad)
    for compact in (True, False):
        out = hop_sum(per_hop, path, compact)
        (out_grad,) = torch.autograd.grad(out, per_hop, grad)
        assert torch.allclose(out, expected, atol=1e-6)
        assert torch.allclose(out_grad, expected_grad, atol=1e-5)
    # No bonds at all (one atom): zeros, for both routes.
    for compact in (True, False):
        out = hop_sum(torch.zeros(4, 0, 3), torch.full((1, 4), -1), compact)
        assert torch.equal(out, torch.zeros(1, 3))


@pytest.mark.parametrize("block_bytes", [PairHead.block_bytes, 1, 4 * 4 * 25 * 2])
def test_pair_head_cross_entropy_equals_full_logits(block_bytes, monkeypatch):
    """Also scored a molecule at a time (1 byte) and two at a time (a block of 2 molecules'
    4 x 5 x 5 logits), as large molecules are: the same loss, accuracy and gradients."""
    monkeypatch.setattr(PairHead, "block_bytes", block_bytes)
    torch.manual_seed(0)
    head = PairHead(channels=12, out_channels=3 * 4, hidden_channels=4)
    with torch.no_grad():
        head.head.bias.copy_(torch.randn(12))  # a bias that matters (it starts at zero)
    x = torch.randn(3, 5, 12, requires_grad=True)
    labels = torch.randint(0, 4, (3, 5, 5, 2))  # 2 of the 3 groups of 4 classes
    labels[0, :, :, 1] = -100
    labels[1, 3:] = -100
    params = [x, *head.parameters()]
    loss, acc = head.cross_entropy(x, labels, num_classes=4)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    logits = head(x)[..., :8].reshape(-1, 4)
    target = labels.reshape(-1)
    expected = torch.nn.functional.cross_entropy(logits, target, ignore_index=-100)
    expected_grads = torch.autograd.grad(expected, params, allow_unused=True)
    valid = target != -100
    expected_acc = (logits[valid].argmax(-1) == target[valid]).float().mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert torch.allclose(grad, expected_grad, atol=1e-6)
    assert grads[-1][8:].abs().sum() == 0  # the unscored group's bias gets no gradient
    assert torch.allclose(acc, expected_acc)
    # A second backward pass through the same graph gives the same gradients.
    loss, _ = head.cross_entropy(x, labels, num_classes=4)
    first = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    second = torch.autograd.grad(loss, params, allow_unused=True)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert head.cross_entropy(x, torch.full((3, 5, 5, 1), -100), 4) == (None, None)
    with pytest.raises(ValueError, match="4 groups of 4 classes need 16 outputs"):
        head.cross_entropy(x, labels.repeat(1, 1, 1, 2), 4)


@pytest.mark.parametrize("block_bytes", [PairHead.block_bytes, 1])
def test_pair_head_factored_cross_entropy_sums_the_parts(block_bytes, monkeypatch):
    """Groups of three softmaxes side by side (5, 6 and 2 classes; the edge head uses two,
    10 and 6): the loss is the sum of F.cross_entropy over each part's logits, per
    labelled entry, with the same gradients; an entry is correct when all three are."""
    monkeypatch.setattr(PairHead, "block_bytes", block_bytes)
    torch.manual_seed(1)
    sizes = (5, 6, 2)
    head = PairHead(channels=12, out_channels=2 * 13, hidden_channels=4)
    with torch.no_grad():
        head.head.bias.copy_(torch.randn(26))
    x = torch.randn(3, 5, 12, requires_grad=True)
    labels = torch.stack([torch.randint(0, s, (3, 5, 5, 2)) for s in sizes], -1)
    labels[0, :, :, 1] = -100  # whole entries unlabelled
    labels[2, 4:] = -100
    params = [x, *head.parameters()]
    loss, acc = head.cross_entropy(x, labels, sizes)
    grads = torch.autograd.grad(loss, params)
    logits = head(x).view(3, 5, 5, 2, 13)
    valid = labels[..., 0] != -100
    expected = 0
    start = 0
    hits = torch.ones_like(valid)
    for part, size in enumerate(sizes):
        z, t = logits[..., start : start + size][valid], labels[..., part][valid]
        expected = expected + torch.nn.functional.cross_entropy(z, t, reduction="sum")
        hits[valid] &= z.argmax(-1) == t
        start += size
    expected = expected / valid.sum()
    expected_grads = torch.autograd.grad(expected, params)
    assert torch.allclose(loss, expected, atol=1e-6)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert torch.allclose(grad, expected_grad, atol=1e-6)
    assert 0 < (hits & valid).sum() < valid.sum()  # some entries right, not all
    assert torch.allclose(acc, (hits & valid).sum() / valid.sum())
    with pytest.raises(ValueError, match=r"3 class sizes \(5, 6, 2\) need labels"):
        head.cross_entropy(x, labels[..., 0], sizes)


def test_pair_cross_entropy_parts_pass_gradcheck():
    from pyg_molblend.nn.heads import PairCrossEntropy

    torch.manual_seed(0)
    left = torch.randn(2, 5, 4, 3, dtype=torch.double, requires_grad=True)
    col = torch.randn(2, 4, 3, dtype=torch.double, requires_grad=True)
    bias = torch.randn(5, dtype=torch.double, requires_grad=True)
    target = torch.stack([torch.randint(0, 3, (2, 4, 4)), torch.randint(0, 2, (2, 4, 4))], -1)
    target[0, 1] = -100
    assert torch.autograd.gradcheck(
        lambda *args: PairCrossEntropy.apply(*args, target, (3, 2))[0], (left, col, bias)
    )
