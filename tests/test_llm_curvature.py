"""Curvature of the forget loss: Lanczos eigenpairs of the matrix-free Hessian and GGN equal
those of dense matrices built independently (autograd's Hessian; Jᵀ H J from the Jacobian), on
full models and on the LoRA subspace; on a linear model the operator is (2/k) X_Uᵀ X_U."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm.curvature import (
    CurvatureError,
    ForgetLoss,
    hutchinson_trace,
    top_eigenpairs,
    with_eager_attention,
)


def _rmsnorm_in_its_dtype(self, hidden):
    # transformers' LlamaRMSNorm computes in float32, which caps a float64 check at float32's
    # precision; the same normalisation in the input's dtype (float64 here).
    variance = hidden.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden * torch.rsqrt(variance + self.variance_epsilon))


@pytest.fixture(autouse=True)
def _float64_norms(monkeypatch):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    monkeypatch.setattr(LlamaRMSNorm, "forward", _rmsnorm_in_its_dtype)


def micro_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=24, hidden_size=8, intermediate_size=12, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
        tie_word_embeddings=True,
    )  # fmt: skip
    model = LlamaForCausalLM(cfg).double()
    # Larger weights than the default init, so the curvature has some structure.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0)
    return with_eager_attention(model).eval()


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 24, (3, 7), generator=g)
    labels = ids.clone()
    labels[:, :3] = -100  # the "prompt"
    labels[2, 5:] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def dense_hessian(fl: ForgetLoss) -> np.ndarray:
    def loss(theta):
        return sum(fl.loss_of_outputs(fl.outputs(theta, b), b) for b in fl.batches)

    return torch.autograd.functional.hessian(loss, fl.theta0).numpy()


def dense_ggn(fl: ForgetLoss) -> np.ndarray:
    """Jᵀ H_out J with J from autograd's Jacobian and H_out = (diag p − p pᵀ)/N per token."""
    (b,) = fl.batches
    J = torch.autograd.functional.jacobian(lambda t: fl.outputs(t, b), fl.theta0)  # (B,T,V,n)
    out = fl.outputs(fl.theta0, b).detach()
    B, T, V = out.shape
    J = J.reshape(B * T, V, -1)
    G = torch.zeros(fl.dim, fl.dim, dtype=torch.float64)
    labels = b["labels"]
    for i in range(B):
        for t in range(T - 1):
            if labels[i, t + 1] == -100:
                continue
            p = torch.softmax(out[i, t], -1)
            H = torch.diag(p) - torch.outer(p, p)
            Jt = J[i * T + t]  # (V, n)
            G += Jt.T @ H @ Jt
    return (G / fl.normaliser).numpy()


def micro_qwen2(seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=24, hidden_size=8, intermediate_size=12, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
    )  # fmt: skip
    return Qwen2ForCausalLM(cfg).double().eval()


@pytest.mark.parametrize("make", [micro_llama, micro_qwen2], ids=["llama", "qwen2"])
def test_written_out_attention_keeps_the_causal_and_padding_mask(make):
    """The operators' forward equals the model's own (SDPA) forward on every real token: a
    custom attention that lost the mask (transformers passes none to an attention it does not
    know) would let tokens see the future."""
    model = make()
    model.set_attn_implementation("sdpa")
    b = batch()
    b["attention_mask"][1, 5:] = 0  # right padding, as forget_batches collates
    b["labels"][1, 5:] = -100
    with torch.no_grad():
        expected = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    fl = ForgetLoss(with_eager_attention(model), [b])
    got = fl.outputs(fl.theta0, b).detach()
    real = b["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], rtol=1e-10, atol=1e-10)
    # and the future matters: changing the last token changes no earlier logit
    b2 = {k: v.clone() for k, v in b.items()}
    b2["input_ids"][:, -1] = (b2["input_ids"][:, -1] + 1) % 24
    later = fl.outputs(fl.theta0, b2).detach()
    torch.testing.assert_close(later[:, :-1], got[:, :-1], rtol=0, atol=0)


def test_kept_forward_gives_the_same_products():
    """GGN products at θ0 reuse the forward; at another point, or after θ0 is replaced, they are
    computed afresh and equal those of a ForgetLoss built there."""
    fl = ForgetLoss(micro_llama(), [batch()])
    v = torch.randn(fl.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    first, again = fl.ggn_vp(v), fl.ggn_vp(v)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    fresh = ForgetLoss(micro_llama(), [batch()], keep_graph=False)
    torch.testing.assert_close(first, fresh.ggn_vp(v), rtol=1e-12, atol=1e-12)
    other = fl.theta0 + 0.01 * v
    at_other = fl.ggn_vp(v, other)
    assert not torch.allclose(at_other, first)
    fl.theta0 = other
    torch.testing.assert_close(fl.ggn_vp(v), at_other, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_lanczos_equals_dense_eigenvalues(kind):
    fl = ForgetLoss(micro_llama(), [batch()])
    dense = dense_hessian(fl) if kind == "hessian" else dense_ggn(fl)
    assert np.allclose(dense, dense.T, atol=1e-10)
    expected = np.sort(np.linalg.eigvalsh(dense))[::-1][:5]
    got = top_eigenpairs(fl.operator(kind), 5, tol=1e-12)
    np.testing.assert_allclose(got.values, expected, rtol=1e-6)
    assert got.products == fl.products > 5
    # eigenvectors: A v = lambda v
    v = got.vectors[:, 0]
    np.testing.assert_allclose(dense @ v, got.values[0] * v, atol=1e-6 * abs(got.values[0]))
    if kind == "ggn":  # positive semi-definite
        assert np.linalg.eigvalsh(dense).min() > -1e-10


def test_a_float32_lanczos_finds_the_dense_eigenpairs():
    """The main job's call: a float32 model, Lanczos in float32 at SPAN_TOL, against the dense
    GGN of the same weights in float64."""
    from llm.path_theory import SPAN_TOL

    exact = ForgetLoss(micro_llama(), [batch()])
    dense = dense_ggn(exact)
    fl = ForgetLoss(micro_llama().float(), [batch()])
    op = fl.operator("ggn", dtype="float32")
    assert op.dtype == np.float32 and op.matvec(np.ones(fl.dim)).dtype == np.float32
    got = top_eigenpairs(op, 5, tol=SPAN_TOL)
    assert got.values.dtype == np.float32
    values, vectors = np.linalg.eigh(dense)
    np.testing.assert_allclose(got.values, values[::-1][:5], rtol=1e-4)
    # the top-5 span: every principal cosine with the dense eigenvectors' is ~1
    cosines = np.linalg.svd(vectors[:, ::-1][:, :5].T @ got.vectors, compute_uv=False)
    assert cosines.min() > 1 - 1e-4


def test_operator_columns_equal_the_dense_matrices():
    fl = ForgetLoss(micro_llama(seed=3), [batch(2)])
    H, G = dense_hessian(fl), dense_ggn(fl)
    e = np.zeros(fl.dim)
    for j in (0, 7, fl.dim // 2, fl.dim - 1):
        e[:] = 0.0
        e[j] = 1.0
        np.testing.assert_allclose(fl.operator("hessian").matvec(e), H[:, j], atol=1e-10)
        np.testing.assert_allclose(fl.operator("ggn").matvec(e), G[:, j], atol=1e-10)


def test_the_lora_subspace():
    """On a fresh adapter the operators act on the adapter's parameters only."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(micro_llama(), config)
    with torch.no_grad():  # B = 0 at init would make the curvature in A vanish identically
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    fl = ForgetLoss(model, [batch()])
    assert all("lora_" in n for n in fl.names) and fl.dim == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    expected = np.sort(np.linalg.eigvalsh(dense_hessian(fl)))[::-1][:3]
    np.testing.assert_allclose(
        top_eigenpairs(fl.operator("hessian"), 3).values, expected, rtol=1e-6
    )


def test_a_linear_model_has_the_theorys_curvature():
    """One linear layer with the squared loss (1/k)||X_U θ − y_U||²: G = H = (2/k) X_Uᵀ X_U."""
    rng = np.random.default_rng(0)
    k, d = 5, 9
    X, y = rng.normal(size=(k, d)), rng.normal(size=k)
    lin = torch.nn.Linear(d, 1, bias=False).double()
    b = {"x": torch.tensor(X), "y": torch.tensor(y)}
    fl = ForgetLoss(lin, [b], loss="squared")
    expected = 2.0 / k * X.T @ X
    for kind in ("ggn", "hessian"):
        op = fl.operator(kind)
        dense = np.column_stack([op.matvec(col) for col in np.eye(d)])
        np.testing.assert_allclose(dense, expected, atol=1e-12)
    top = top_eigenpairs(fl.operator("ggn"), 3)
    np.testing.assert_allclose(top.values, np.sort(np.linalg.eigvalsh(expected))[::-1][:3])


def test_hutchinson_trace_is_unbiased():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(30, 30))
    A = A @ A.T
    from scipy.sparse.linalg import aslinearoperator

    est, se = hutchinson_trace(aslinearoperator(A), samples=400, seed=3)
    assert abs(est - np.trace(A)) < 4 * se and se < 0.2 * np.trace(A)
    fl = ForgetLoss(micro_llama(), [batch()])
    est, se = hutchinson_trace(fl.operator("ggn"), samples=200)
    assert abs(est - np.trace(dense_ggn(fl))) < 4 * se


def test_bad_requests_are_one_line_errors():
    fl = ForgetLoss(micro_llama(), [batch()])
    with pytest.raises(CurvatureError, match="r = .* eigenpairs"):
        top_eigenpairs(fl.operator("ggn"), fl.dim)
    with pytest.raises(CurvatureError, match="empty"):
        ForgetLoss(micro_llama(), [])
    with pytest.raises(CurvatureError, match="kind"):
        fl.operator("fisher")
    with pytest.raises(CurvatureError, match="hutchinson|samples"):
        hutchinson_trace(fl.operator("ggn"), samples=1)
    broken = micro_llama()
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))
    with pytest.raises(CurvatureError, match="not finite"):
        ForgetLoss(broken, [batch()]).operator("ggn").matvec(np.ones(fl.dim))
