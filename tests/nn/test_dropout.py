import re

import pytest
import torch
import torch.nn.functional as F

from pyg_molblend import BlendedGraphTransformer
from pyg_molblend.nn import DenoiseHead, Dropout, key_padding_bias
from pyg_molblend.nn.dropout import dropout
from pyg_molblend.nn.layer import MIN_SOFTMAX_WIDTH, cpu_attention, pad_softmax_rows


def test_mask_fraction_and_scale():
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    for p in (0.1, 0.5, 0.9):
        out = dropout(x, p)
        kept = out != 0
        # 1e6 Bernoulli(1 - p) draws: the standard deviation of the kept fraction is < 5e-4.
        assert abs(kept.float().mean().item() - (1 - p)) < 3e-3
        assert torch.allclose(out[kept], torch.full((), 1 / (1 - p)))
        assert out.dtype == torch.float32 and out.shape == x.shape
    # float64 inputs keep a float64 scale.
    out64 = dropout(torch.ones(100, dtype=torch.float64), 0.3)
    assert out64.dtype == torch.float64
    assert set(out64.tolist()) <= {0.0, 1 / 0.7}


def test_mask_by_hand_from_the_seed():
    # The mask, rebuilt from its definition: one int64 draw of torch's generator seeds a
    # PCG64 whose raw 64-bit outputs, read as 16-bit words, keep an element when the
    # word is at least round(p * 2**16) (p = 0.3: 19661, so 0.300003 are dropped).
    import numpy as np

    torch.manual_seed(11)
    out = dropout(torch.ones(3, 7), 0.3)
    torch.manual_seed(11)
    seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))
    words = np.random.PCG64(seed).random_raw(6).view(np.uint16)[:21]
    keep = torch.from_numpy(words.astype(np.int64) >= 19661).view(3, 7)
    assert torch.equal(out, torch.where(keep, torch.tensor(1 / 0.7), torch.tensor(0.0)))
    assert 0 < int(keep.sum()) < 21  # both outcomes occur for this seed


def test_mask_is_seeded_by_torch_and_fresh_per_call():
    x = torch.randn(64, 33)
    torch.manual_seed(7)
    first, second = dropout(x, 0.5), dropout(x, 0.5)
    torch.manual_seed(7)
    assert torch.equal(dropout(x, 0.5), first)
    assert not torch.equal((first == 0), (second == 0))
    # Odd element counts and non-contiguous inputs keep their shape and values.
    xt = x.t()
    out = dropout(xt, 0.25)
    kept = out != 0
    assert out.shape == xt.shape and torch.allclose(out[kept], xt[kept] / 0.75)


def test_gradient_is_the_mask_and_inplace():
    torch.manual_seed(1)
    x = torch.randn(50, 20, requires_grad=True)
    out = dropout(x, 0.4)
    out.sum().backward()
    expected = torch.where(out != 0, torch.full((), 1 / 0.6), torch.zeros(()))
    assert torch.allclose(x.grad, expected)
    y = torch.ones(10, 10)
    torch.manual_seed(2)
    ret = dropout(y, 0.5, inplace=True)
    assert ret is y and set(y.view(-1).tolist()) <= {0.0, 2.0}


def test_identity_and_edge_probabilities():
    x = torch.randn(4, 5)
    assert dropout(x, 0.0) is x
    assert dropout(x, 0.7, training=False) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros(4, 5))
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match=re.escape(str(p))):
            dropout(x, p)
    layer = Dropout(0.3)
    assert repr(layer) == "Dropout(p=0.3, inplace=False)"
    assert layer.eval()(x) is x
    with pytest.raises(ValueError, match=r"1\.5"):
        Dropout(1.5)  # torch.nn.Dropout's own check


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_non_cpu_uses_torch_dropout():
    x = torch.ones(1000, device="cuda")
    torch.manual_seed(3)
    out = dropout(x, 0.5)
    torch.manual_seed(3)
    assert torch.equal(out, torch.nn.functional.dropout(x, 0.5))


def test_key_padding_bias_by_hand():
    mask = torch.tensor([[True, True, False], [True, False, False]])
    bias = key_padding_bias(mask, torch.float64)
    inf = float("inf")
    expected = torch.tensor([[0.0, 0.0, -inf], [0.0, -inf, -inf]], dtype=torch.float64)
    assert bias.shape == (2, 1, 1, 3) and bias.dtype == torch.float64
    assert torch.equal(bias.view(2, 3), expected)


def test_attention_dropout_path_by_hand():
    # The explicit CPU path used for attention dropout in training: softmax(qk^T/sqrt(d) + bias)
    # times this module's dropout mask, then V; the mask is reproduced from the same seed.
    torch.manual_seed(0)
    layer = BlendedGraphTransformer(16, heads=4, ffn_channels=32, attn_dropout=0.3).train()
    x, bias = torch.randn(2, 5, 16), torch.randn(2, 4, 5, 5)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    torch.manual_seed(11)
    out = layer(x, bias, mask)
    torch.manual_seed(11)
    drop = dropout(torch.ones(2, 4, 5, 5), 0.3)  # the layer's only random draw
    q = layer.q_proj(x).view(2, 5, 4, 4).transpose(1, 2)
    k = layer.k_proj(x).view(2, 5, 4, 4).transpose(1, 2)
    v = layer.v_proj(x).view(2, 5, 4, 4).transpose(1, 2)
    logits = (q @ k.transpose(-1, -2) / 2.0 + bias).masked_fill(
        ~mask.view(2, 1, 1, 5), float("-inf")
    )
    attn = layer.out_proj(((logits.softmax(-1) * drop) @ v).transpose(1, 2).reshape(2, 5, 16))
    ref = layer.attn_norm(x + attn)
    ref = layer.ffn_norm(ref + layer.feed_forward(ref)) * mask.unsqueeze(-1)
    assert torch.allclose(out, ref, atol=1e-5)
    # With its random mask, training differs from the eval path.
    torch.manual_seed(11)
    assert not torch.allclose(layer(x, bias, mask), layer.eval()(x, bias, mask), atol=1e-3)


def test_cpu_attention_equals_sdpa_padded_or_not(monkeypatch):
    # Below MIN_SOFTMAX_WIDTH keys the softmax rows are padded with -inf; at and above it
    # not: both give SDPA's result, and dropout draws one mask per real weight.
    torch.manual_seed(0)
    seen = []  # the shapes dropout was given
    for num_nodes in (5, MIN_SOFTMAX_WIDTH - 1, MIN_SOFTMAX_WIDTH, MIN_SOFTMAX_WIDTH + 3):
        q, k, v = torch.randn(3, 2, 4, num_nodes, 8).unbind(0)
        bias = torch.randn(2, 4, num_nodes, num_nodes)
        keys = torch.ones(2, num_nodes, dtype=torch.bool)
        keys[1, num_nodes // 2 :] = False
        expected = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.masked_fill(~keys.view(2, 1, 1, -1), float("-inf"))
        )
        out = cpu_attention(q, k, v, bias, keys)
        assert torch.allclose(out, expected, atol=1e-5), num_nodes
        seen.clear()
        with monkeypatch.context() as patch:
            patch.setattr(
                "pyg_molblend.nn.layer.dropout", lambda t, p, training: seen.append(t.shape) or t
            )
            out = cpu_attention(q, k, v, bias, keys, 0.5, True)
        assert torch.allclose(out, expected, atol=1e-5)
        assert seen == [torch.Size([2, 4, num_nodes, num_nodes])]


def test_attention_training_path_equals_eval_without_dropout(monkeypatch):
    torch.manual_seed(0)
    layer = BlendedGraphTransformer(16, heads=4, ffn_channels=32, attn_dropout=0.3)
    x, bias = torch.randn(3, 6, 16), torch.randn(3, 4, 6, 6)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [False] * 6])
    expected = layer.eval()(x, bias, mask)
    monkeypatch.setattr("pyg_molblend.nn.layer.dropout", lambda t, p, training: t)
    out = layer.train()(x, bias, mask)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.isfinite(out).all() and (out[2] == 0).all()


def test_denoise_head_masks_padded_keys():
    torch.manual_seed(0)
    head = DenoiseHead(channels=16, heads=4).eval()
    x, pos = torch.randn(2, 5, 16), torch.randn(2, 5, 3)
    delta = pos.unsqueeze(2) - pos.unsqueeze(1)
    bias = torch.randn(2, 4, 5, 5)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out = head(x, bias, delta, mask)
    # Padded atoms of the second molecule change nothing for its real atoms.
    x2, bias2, delta2 = x.clone(), bias.clone(), delta.clone()
    x2[1, 3:] = 100.0
    bias2[1, :, :, 3:] = 50.0
    delta2[1, :, 3:] = 7.0
    out2 = head(x2, bias2, delta2, mask)
    assert torch.allclose(out[1, :3], out2[1, :3], atol=1e-5)
    assert torch.isfinite(out[:, :3]).all()


def test_pad_softmax_rows_changes_no_softmax_and_no_head(monkeypatch):
    torch.manual_seed(0)
    for width in (5, MIN_SOFTMAX_WIDTH, MIN_SOFTMAX_WIDTH + 3):
        x = torch.randn(7, width)
        padded = pad_softmax_rows(x)
        assert padded.size(-1) == max(width, MIN_SOFTMAX_WIDTH)
        assert torch.equal(padded[:, :width], x) and (padded[:, width:] == float("-inf")).all()
        assert torch.allclose(padded.log_softmax(-1)[:, :width], x.log_softmax(-1), atol=1e-6)
        target = torch.randint(0, width, (7,))
        assert torch.allclose(F.cross_entropy(padded, target), F.cross_entropy(x, target))
    # The denoising head with and without the padding (8 atoms: padded to 16).
    head = DenoiseHead(channels=16, heads=4).eval()
    x, pos = torch.randn(2, 8, 16), torch.randn(2, 8, 3)
    delta = pos.unsqueeze(2) - pos.unsqueeze(1)
    bias = torch.randn(2, 4, 8, 8)
    mask = torch.tensor([[True] * 8, [True] * 5 + [False] * 3])
    out = head(x, bias, delta, mask)
    monkeypatch.setattr("pyg_molblend.nn.heads.pad_softmax_rows", lambda t: t)
    assert torch.allclose(out, head(x, bias, delta, mask), atol=1e-6)
