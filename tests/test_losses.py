"""Properties of the policy losses: gradient identities, convexity, chunking invariance."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lco_core.advantages import gae_advantages, group_advantages, rloo_advantages
from lco_core.fused import chunked_loss
from lco_core.losses import (
    LOSSES,
    LossConfig,
    TokenData,
    get_loss,
    old_log_distribution,
    vocab_advantages,
)

V = 11


def make_data(
    n: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    k: int | None = None,
    logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, TokenData]:
    g = torch.Generator().manual_seed(seed)
    z = logits if logits is not None else torch.randn(n, V, generator=g, dtype=dtype) * 2
    tokens = torch.randint(0, V, (n,), generator=g)
    old_z = z + 0.3 * torch.randn(n, V, generator=g, dtype=dtype)  # pi_old differs from pi
    old_logp = torch.log_softmax(old_z, -1)
    topk = old_logp.topk(k, -1) if k else None
    data = TokenData(
        tokens=tokens,
        advantages=torch.randn(n, generator=g, dtype=dtype),
        weights=torch.full((n,), 1.0 / n, dtype=dtype),
        old_logprobs=old_logp.gather(-1, tokens[:, None])[:, 0],
        old_logits=old_z.gather(-1, tokens[:, None])[:, 0],
        topk_ids=topk.indices if topk else None,
        topk_logprobs=topk.values if topk else None,
        ref_logprobs=old_logp.gather(-1, tokens[:, None])[:, 0] - 0.1,
    )
    return z, data


def grad_of(name: str, z: torch.Tensor, data: TokenData, cfg: LossConfig) -> torch.Tensor:
    z = z.clone().requires_grad_(True)
    get_loss(name)(z, data, cfg).sum().backward()
    assert z.grad is not None
    return z.grad


@pytest.mark.parametrize("mode", ["sampled", "estimate"])
@pytest.mark.parametrize("source", ["current", "topk"])
def test_lco_kld_gradient_is_softmax_minus_target(mode: str, source: str) -> None:
    beta = 1.5
    z, data = make_data(16, k=4)
    cfg = LossConfig(beta=beta, vocab_advantage=mode, old_source=source)  # type: ignore[arg-type]
    # The target, built independently of the loss: pi* = pi_old * exp(A/beta) / Z.
    logp = torch.log_softmax(z, -1)
    pi_old = old_log_distribution(logp, data, source).exp()
    unnorm = pi_old * torch.exp(vocab_advantages(pi_old.log(), data, mode) / beta)
    target = unnorm / unnorm.sum(-1, keepdim=True)
    assert torch.allclose(grad_of("lco_kld", z, data, cfg), logp.exp() - target, atol=1e-12)


def test_lco_kld_sampled_target_reweights_only_the_sampled_token() -> None:
    z, data = make_data(8)
    cfg = LossConfig(beta=2.0)
    p = torch.softmax(z, -1)
    target = p - grad_of("lco_kld", z, data, cfg)
    a = data.tokens
    ratio = target / p
    sampled_ratio = ratio.gather(-1, a[:, None])[:, 0]
    others = ratio.scatter(-1, a[:, None], float("nan"))
    # Every other token is scaled by the same 1/Z; the sampled one by exp(A/beta)/Z.
    z_norm = others.nanmean(-1)
    assert torch.allclose(
        others.nan_to_num(0) + z_norm[:, None] * torch.nn.functional.one_hot(a, V),
        z_norm[:, None].expand(-1, V),
        atol=1e-12,
    )
    assert torch.allclose(sampled_ratio / z_norm, torch.exp(data.advantages / 2.0), atol=1e-12)


@pytest.mark.parametrize("base", ["old", "current"])
def test_lco_mse_and_logcosh_gradients(base: str) -> None:
    beta = 0.7
    z, data = make_data(12)
    cfg = LossConfig(beta=beta, target_base=base)  # type: ignore[arg-type]
    a = data.tokens
    z_a = z.gather(-1, a[:, None])[:, 0]
    target = (data.old_logits if base == "old" else z_a) + data.advantages / beta
    onehot = torch.nn.functional.one_hot(a, V).to(z.dtype)
    expected_mse = (2 * (z_a - target))[:, None] * onehot
    expected_logcosh = torch.tanh(z_a - target)[:, None] * onehot
    assert torch.allclose(grad_of("lco_mse", z, data, cfg), expected_mse, atol=1e-12)
    assert torch.allclose(grad_of("lco_logcosh", z, data, cfg), expected_logcosh, atol=1e-12)


def test_logcosh_is_stable_for_large_residuals() -> None:
    z, data = make_data(4)
    data.advantages[:] = 1e4
    loss = get_loss("lco_logcosh")(z, data, LossConfig(beta=1e-2))
    assert torch.isfinite(loss).all()


def test_estimate_vocab_advantage_has_zero_mean_under_pi_old() -> None:
    z, data = make_data(64)
    log_old = torch.log_softmax(z, -1)
    p_a = log_old.gather(-1, data.tokens[:, None])[:, 0].exp()
    confident = p_a >= 0.9
    adv = vocab_advantages(log_old, data, "estimate")
    mean = (log_old.exp() * adv).sum(-1)
    assert torch.allclose(mean[~confident], torch.zeros_like(mean[~confident]), atol=1e-12)
    assert (~confident).sum() > 10
    # Same target as the sampled-only advantage below p(a) = 0.9 (it differs by a constant).
    sampled = vocab_advantages(log_old, data, "sampled")
    t1 = torch.log_softmax(log_old + adv, -1)
    t2 = torch.log_softmax(log_old + sampled, -1)
    assert torch.allclose(t1[~confident], t2[~confident], atol=1e-10)


def test_topk_old_distribution_keeps_tail_mass() -> None:
    z, data = make_data(10, k=3)
    log_old = old_log_distribution(torch.log_softmax(z, -1), data, "topk")
    assert torch.allclose(log_old.exp().sum(-1), torch.ones(10, dtype=z.dtype), atol=1e-10)
    assert torch.allclose(log_old.gather(-1, data.topk_ids), data.topk_logprobs, atol=1e-12)  # type: ignore[arg-type]
    assert torch.allclose(
        log_old.gather(-1, data.tokens[:, None])[:, 0], data.old_logprobs, atol=1e-12
    )


def reference(
    hidden: torch.Tensor, weight: torch.Tensor, data: TokenData, name: str, cfg: LossConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain autograd over the loss definitions: (pos, neg) halves of the weighted sum."""
    per_token = get_loss(name)(hidden @ weight.T, data, cfg) * data.weights
    positive = data.advantages > 0
    return per_token[positive].sum(), per_token[~positive].sum()


CONFIGS = [
    LossConfig(beta=1.3),  # LCO-KLD's closed form (sampled advantage, pi_old = current)
    LossConfig(beta=0.8, vocab_advantage="estimate"),
    LossConfig(beta=1.3, old_source="topk", kl_coef=0.1, target_base="current"),
    LossConfig(beta=2.0, clip_eps=0.05, clip_eps_high=0.1, kl_coef=0.2),
]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_fused_chunked_loss_matches_autograd(name: str, cfg: LossConfig) -> None:
    """Values and gradients of the fused, chunked path equal autograd over the definitions,
    for any chunk size, and for each half (A > 0, A <= 0) on its own."""
    torch.manual_seed(0)
    n, h = 37, 8
    _, data = make_data(n, k=4)
    hidden = torch.randn(n, h, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(V, h, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():  # pi_old near the current policy, so ratios straddle the clip
        logits = hidden @ weight.T + 0.05 * torch.randn(n, V, dtype=torch.float64)
        data.old_logprobs = torch.log_softmax(logits, -1).gather(-1, data.tokens[:, None])[:, 0]
    ref_pos, ref_neg = reference(hidden, weight, data, name, cfg)
    expected = [
        torch.autograd.grad(half, (hidden, weight), retain_graph=True)
        for half in (ref_pos, ref_neg)
    ]
    for chunk in (n, 5):
        for split in (False, True):
            out = chunked_loss(hidden, weight, None, data, name, cfg, chunk_size=chunk, split=split)
            assert torch.allclose(out.pos.double(), ref_pos, atol=1e-5)
            assert torch.allclose(out.neg.double(), ref_neg, atol=1e-5)
            if split:
                for half, (eh, ew) in zip((out.pos, out.neg), expected, strict=True):
                    gh, gw = torch.autograd.grad(half, (hidden, weight), retain_graph=True)
                    assert torch.allclose(gh, eh, atol=1e-6) and torch.allclose(gw, ew, atol=1e-6)
            else:
                gh, gw = torch.autograd.grad(out.loss, (hidden, weight))
                assert torch.allclose(gh, expected[0][0] + expected[1][0], atol=1e-6)
                assert torch.allclose(gw, expected[0][1] + expected[1][1], atol=1e-6)


@pytest.mark.parametrize("split", [False, True])
def test_fused_loss_with_a_frozen_head_gives_the_same_hidden_gradient(split: bool) -> None:
    """A frozen LM head (LoRA) gets no gradient, and the trunk's gradient is unchanged: the
    fused loss skips the head-sized [V, H] buffer and its matmul then."""
    torch.manual_seed(0)
    n, h = 23, 8
    _, data = make_data(n, k=4)
    weight = torch.randn(V, h, dtype=torch.float64)
    bias = torch.randn(V, dtype=torch.float64)
    grads = []
    for trained in (True, False):
        hidden = torch.randn(n, h, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        hidden.requires_grad_(True)
        w, b = weight.clone().requires_grad_(trained), bias.clone().requires_grad_(trained)
        out = chunked_loss(hidden, w, b, data, "lco_kld", LossConfig(), chunk_size=5, split=split)
        node = out.pos.grad_fn
        while node is not None and "Fused" not in type(node).__name__:
            node = node.next_functions[0][0]
        assert node is not None
        # What the backward keeps: a head-sized gradient only when the head trains.
        assert any(t.shape == weight.shape for t in node.saved_tensors) == trained
        (out.pos + 2 * out.neg if split else out.loss).backward()
        assert (w.grad is not None) == trained and (b.grad is not None) == trained
        grads.append(hidden.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-12)


def test_fused_statistics() -> None:
    _, data = make_data(20)
    hidden = torch.randn(20, 6, dtype=torch.float64)
    weight = torch.randn(V, 6, dtype=torch.float64)
    with torch.no_grad():
        logp = torch.log_softmax(hidden @ weight.T, -1)
        data.old_logprobs = logp.gather(-1, data.tokens[:, None])[:, 0] + 0.1 * torch.randn(
            20, dtype=torch.float64
        )
    out = chunked_loss(hidden, weight, None, data, "grpo", LossConfig(clip_eps=0.05), chunk_size=7)
    assert out.entropy_sum == pytest.approx(float(-(logp.exp() * logp).sum()), rel=1e-9)
    assert out.sampled_prob_sum == pytest.approx(
        float(logp.gather(-1, data.tokens[:, None]).exp().sum()), rel=1e-9
    )
    assert 0 < out.clipped < 20 and out.tokens == 20


def _hessian(name: str, logits: torch.Tensor, adv: float, token: int) -> torch.Tensor:
    data = TokenData(
        tokens=torch.tensor([token]),
        advantages=torch.tensor([adv], dtype=torch.float64),
        weights=torch.ones(1, dtype=torch.float64),
        old_logprobs=torch.log_softmax(logits, -1)[None, token],
        old_logits=logits[None, token],
    )
    fn = get_loss(name)
    return torch.autograd.functional.hessian(
        lambda z: fn(z[None], data, LossConfig()).sum(), logits
    )


logit_vectors = st.lists(st.floats(-4, 4), min_size=5, max_size=5).map(
    lambda xs: torch.tensor(xs, dtype=torch.float64)
)


@settings(max_examples=60, deadline=None)
@given(logits=logit_vectors, adv=st.floats(-5, 5), token=st.integers(0, 4))
def test_lco_kld_is_convex_in_the_logits(logits: torch.Tensor, adv: float, token: int) -> None:
    eigenvalues = torch.linalg.eigvalsh(_hessian("lco_kld", logits, adv, token))
    assert eigenvalues.min() >= -1e-10


@settings(max_examples=60, deadline=None)
@given(logits=logit_vectors, adv=st.floats(-5, -0.1), token=st.integers(0, 4))
def test_reinforce_with_negative_advantage_is_not_convex(
    logits: torch.Tensor, adv: float, token: int
) -> None:
    eigenvalues = torch.linalg.eigvalsh(_hessian("reinforce", logits, adv, token))
    assert eigenvalues.min() < -1e-6 * abs(adv)


def test_unknown_loss_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown loss .nope.*lco_kld"):
        get_loss("nope")


def test_group_and_rloo_advantages() -> None:
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    g = group_advantages(r, 3)
    assert torch.allclose(g.view(2, 3).mean(-1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(group_advantages(torch.ones(4), 2), torch.zeros(4))
    assert torch.allclose(rloo_advantages(r, 3), torch.tensor([1.0, -0.5, -0.5, -1.0, 0.5, 0.5]))


def test_gae_with_lambda_one_is_return_minus_value() -> None:
    values = torch.tensor([[0.2, 0.4, 0.0], [0.5, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    adv, ret = gae_advantages(torch.tensor([1.0, 0.0]), values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(adv, torch.tensor([[0.8, 0.6, 0.0], [-0.5, 0.0, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))


def _logit_step(name: str, p: float, adv: float, beta: float = 2.0) -> float:
    """d loss / d z(a) for a sampled token a of probability p (the rest of 4 tokens equal)."""
    rest = (1 - p) / 3
    logits = torch.log(torch.tensor([p, rest, rest, rest], dtype=torch.float64))
    logits.requires_grad_(True)
    data = TokenData(
        tokens=torch.tensor([0]),
        advantages=torch.tensor([adv], dtype=torch.float64),
        weights=torch.ones(1, dtype=torch.float64),
        old_logprobs=torch.log_softmax(logits.detach(), -1)[None, 0],
        old_logits=logits.detach()[None, 0],
    )
    get_loss(name)(logits[None], data, LossConfig(beta=beta)).sum().backward()
    assert logits.grad is not None
    return float(logits.grad[0])


def test_lco_kld_pushes_a_confident_token_down_harder_than_up() -> None:
    """The mechanism behind LCO's flatter policies on a sharp (SFT'd) model: lco_kld's step
    on the sampled logit is p - pi*(a), with pi*(a) = p e^(A/beta) / (1 + p (e^(A/beta) - 1)),
    which is concave in A. For p = 0.95 and beta 2 a negative advantage moves the logit
    1.6x as far as the same positive one, so advantages that sum to zero over a group no
    longer cancel and the net step lowers the confident token (mass goes to the rest of the
    vocabulary). The policy gradient (reinforce) and lco_mse are linear in A: no such bias."""
    up, down = _logit_step("lco_kld", 0.95, +1.0), _logit_step("lco_kld", 0.95, -1.0)
    assert abs(down) / abs(up) == pytest.approx(1.6, abs=0.05)
    assert up + down > 0  # descent lowers z(a) on net: the token loses probability
    for linear in ("reinforce", "lco_mse"):
        up, down = _logit_step(linear, 0.95, +1.0), _logit_step(linear, 0.95, -1.0)
        assert up + down == pytest.approx(0.0, abs=1e-12)
    # A larger beta linearises the target: the bias shrinks (1.1x at beta 10).
    up, down = _logit_step("lco_kld", 0.95, +1.0, 10.0), _logit_step("lco_kld", 0.95, -1.0, 10.0)
    assert abs(down) / abs(up) == pytest.approx(1.1, abs=0.05)
