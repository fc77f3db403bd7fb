"""Curvature of the forget loss at a checkpoint, matrix-free: Hessian and Gauss-Newton (GGN) as
linear operators, their top eigenpairs (Lanczos) and trace (Hutchinson).

The forget loss is the fine-tuning loss on the forget set, L(θ) = −(1/N) Σ log π_θ(y_t | ·) over
its N labelled tokens (the NLL that gradient ascent increases): at a checkpoint θ,

- ``H v``: Hessian-vector products by double backward;
- ``G v = Jᵀ H_out J v``: the GGN, with J the Jacobian of the logits (``torch.func.jvp`` and
  ``vjp``) and H_out the Hessian of the token log-loss in the logits, ``diag(p) − p pᵀ`` per
  labelled token (/ N). G is positive semi-definite and equals H where the model is linear in θ.

Both are :class:`scipy.sparse.linalg.LinearOperator` (float64 unless asked) over the flat vector of
the chosen parameters (all trainable ones: the whole model under full fine-tuning, the adapter on
the LoRA subspace), so :func:`top_eigenpairs` is ARPACK's Lanczos (``scipy.sparse.linalg.eigsh``)
and :func:`hutchinson_trace` is a Rademacher estimate. A model with the squared loss (``loss =
"squared"``, mean over rows) is the linear theory's case: G = H = (2/k) X_Uᵀ X_U.

Why not curvlinops: its dependency backpack-for-pytorch requires torchvision, which either pulls
a newer, multi-GB CUDA torch than the pinned CPU build or fails to import beside it; the two
products it would provide are a few lines of ``torch.func`` here, and the eigensolver and trace
estimator are scipy's and the textbook's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pathdep.errors import BadInput

LOSSES = ("token_nll", "squared")


class CurvatureError(BadInput):
    """A curvature request that cannot be computed (no data, r too large, non-finite products)."""


@dataclass
class ForgetLoss:
    """The forget loss of a model on fixed batches, as functions of the flat parameter vector.

    ``batches``: dicts with ``input_ids``, ``attention_mask`` and ``labels`` (-100 = no loss) for
    ``"token_nll"``, or ``x``/``y`` tensors (the model maps x to one output per row) for
    ``"squared"``. ``names``: the parameters the operators act on (default: every parameter that
    requires grad).
    """

    model: torch.nn.Module
    batches: Sequence[dict[str, torch.Tensor]]
    loss: str = "token_nll"
    names: list[str] = field(default_factory=list)
    products: int = 0  # operator products computed so far (Hessian or GGN)
    keep_graph: bool = True  # keep the forward at θ0 between GGN products (see _linear_parts)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise CurvatureError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not self.batches:
            raise CurvatureError("the forget set is empty: nothing to measure curvature on")
        params = dict(self.model.named_parameters())
        self.names = self.names or [n for n, p in params.items() if p.requires_grad]
        if not self.names:
            raise CurvatureError("the model has no parameters that require grad")
        self._frozen = {n: p.detach() for n, p in params.items() if n not in self.names}
        self._shapes = [params[n].shape for n in self.names]
        self._sizes = [params[n].numel() for n in self.names]
        self.dtype = params[self.names[0]].dtype
        self.theta0 = self.flatten({n: params[n].detach() for n in self.names})
        self.normaliser = float(sum(self._count(b) for b in self.batches))
        self._parts: tuple[torch.Tensor, list] | None = None
        if self.normaliser <= 0:
            raise CurvatureError("the forget set has no labelled token")

    # ---- flat vectors <-> parameter dicts

    @property
    def dim(self) -> int:
        return int(sum(self._sizes))

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([tensors[n].reshape(-1) for n in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(flat, self._sizes)
        return {n: p.view(s) for n, p, s in zip(self.names, parts, self._shapes, strict=True)}

    # ---- the loss

    def _count(self, batch: dict[str, torch.Tensor]) -> int:
        if self.loss == "squared":
            return int(batch["y"].numel())
        return int((batch["labels"][:, 1:] != -100).sum())

    def outputs(self, theta: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B, T, V), or the model's outputs (rows,) for the squared loss."""
        from torch.func import functional_call

        params = {**self._frozen, **self.unflatten(theta)}
        if self.loss == "squared":
            return functional_call(self.model, params, (batch["x"],)).reshape(-1)
        args = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        return functional_call(self.model, params, (), args).logits

    def loss_of_outputs(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """This batch's share of the loss (its sum / the whole forget set's count)."""
        if self.loss == "squared":
            return ((out - batch["y"]) ** 2).sum() / self.normaliser
        from llm.logprobs import token_logprobs

        token_logp, _ = token_logprobs(out, batch["labels"])  # (B, T-1), 0 where unlabelled
        return -token_logp.sum() / self.normaliser

    def value(self, theta: torch.Tensor | None = None) -> float:
        theta = self.theta0 if theta is None else theta
        with torch.no_grad():
            return float(sum(self.loss_of_outputs(self.outputs(theta, b), b) for b in self.batches))

    def gradient(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        theta = (self.theta0 if theta is None else theta).detach().requires_grad_(True)
        total = torch.zeros_like(theta)
        for b in self.batches:
            (g,) = torch.autograd.grad(self.loss_of_outputs(self.outputs(theta, b), b), theta)
            total += g
        return total

    # ---- products

    def hvp(self, v: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """Hessian-vector product at ``theta`` (double backward)."""
        theta = (self.theta0 if theta is None else theta).detach().requires_grad_(True)
        total = torch.zeros_like(theta)
        for b in self.batches:
            loss = self.loss_of_outputs(self.outputs(theta, b), b)
            (g,) = torch.autograd.grad(loss, theta, create_graph=True)
            (hv,) = torch.autograd.grad(g @ v, theta)
            total += hv
        self.products += 1
        return total

    def _output_hessian(
        self, out: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """u -> H_out u: the Hessian of this batch's loss in the outputs at ``out``."""
        if self.loss == "squared":
            return lambda u: 2.0 * u / self.normaliser
        labels = batch["labels"]
        mask = torch.zeros_like(labels, dtype=out.dtype)
        mask[:, :-1] = (labels[:, 1:] != -100).to(out.dtype)  # position t predicts token t+1
        mask = mask.unsqueeze(-1) / self.normaliser  # (B, T, 1)
        p = torch.softmax(out.detach().to(torch.float64), dim=-1).to(out.dtype)  # (B, T, V)
        # (diag(p) - p pᵀ) u per token
        return lambda u: (p * u - p * (p * u).sum(-1, keepdim=True)) * mask

    def _linear_parts(
        self, theta: torch.Tensor | None
    ) -> list[tuple[Callable, Callable, Callable]]:
        """Per batch: v -> J v, the vjp of the outputs and the output Hessian at ``theta``. At θ0
        they are kept between products when ``keep_graph`` (Lanczos asks ~3r products at one
        point): the vjp's forward is kept, and J v is traced once (``torch.func.linearize``), so a
        product runs no forward; on the default model a product is then 1.6× faster
        (``benchmarks/curvature.py``), for one forward's activations and one traced graph per
        batch."""
        from torch.func import jvp, linearize, vjp

        at_theta0 = theta is None or theta is self.theta0
        if at_theta0 and self._parts is not None and self._parts[0] is self.theta0:
            return self._parts[1]
        point = (self.theta0 if theta is None else theta).detach()
        keep = at_theta0 and self.keep_graph
        parts = []
        for b in self.batches:

            def f(t: torch.Tensor, b: dict[str, torch.Tensor] = b) -> torch.Tensor:
                return self.outputs(t, b)

            out, back = vjp(f, point)
            with warnings.catch_warnings():  # torch's own forward-AD tables use torch.jit.script
                warnings.simplefilter("ignore", DeprecationWarning)
                # linearize's constant folding warns about each kept constant it attaches
                warnings.filterwarnings("ignore", "Attempted to insert a get_attr", UserWarning)
                if keep:
                    _, jv = linearize(f, point)
                else:

                    def jv(v: torch.Tensor, f: Callable = f) -> torch.Tensor:
                        return jvp(f, (point,), (v,))[1]

            parts.append((jv, back, self._output_hessian(out, b)))
        if keep:
            self._parts = (self.theta0, parts)
        return parts

    def ggn_vp(self, v: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """GGN-vector product Jᵀ H_out J v at ``theta``."""
        point = self.theta0 if theta is None else theta
        total = torch.zeros_like(point.detach())
        for jv, back, hess in self._linear_parts(theta):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                (gv,) = back(hess(jv(v)))
            total += gv
        self.products += 1
        return total

    def linearised_outputs(
        self, theta: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """First-order Taylor model of the outputs around ``theta0``: f0 + J (θ − θ0)."""
        from torch.func import jvp

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            out, jv = jvp(lambda t: self.outputs(t, batch), (self.theta0,), (theta - self.theta0,))
        return out + jv

    def operator(
        self, kind: str = "ggn", theta: torch.Tensor | None = None, dtype: Any = np.float64
    ):
        """The Hessian (``"hessian"``) or GGN (``"ggn"``) at ``theta`` as a scipy LinearOperator
        on flat parameter vectors, in ``dtype`` (float64 by default; ``np.float32`` makes
        ARPACK's own work, which streams its ~2r Lanczos vectors every step, half as heavy)."""
        from scipy.sparse.linalg import LinearOperator

        if kind not in ("ggn", "hessian"):
            raise CurvatureError(f"kind must be ggn or hessian, got {kind!r}")
        product = self.ggn_vp if kind == "ggn" else self.hvp
        device = self.theta0.device
        dtype = np.dtype(dtype)

        def matvec(x: np.ndarray) -> np.ndarray:
            v = torch.as_tensor(np.asarray(x).reshape(-1), dtype=self.dtype, device=device)
            out = product(v, theta).detach().cpu().numpy().astype(dtype, copy=False)
            if not np.all(np.isfinite(out)):
                raise CurvatureError(f"the {kind}-vector product is not finite")
            return out

        return LinearOperator((self.dim, self.dim), matvec=matvec, dtype=dtype)


@dataclass(frozen=True)
class Eigenpairs:
    values: np.ndarray  # (r,) largest first
    vectors: np.ndarray  # (dim, r), orthonormal columns
    products: int  # operator products the solver used


def _counted(op, desc: str, progress: bool):
    """``op`` with its products counted (and shown on a tqdm bar with ``progress``)."""
    from scipy.sparse.linalg import LinearOperator
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit="product", disable=not progress, leave=False)
    bar.products = 0  # a disabled bar does not count

    def matvec(x):
        bar.products += 1
        bar.update(1)
        return op.matvec(x)

    return LinearOperator(op.shape, matvec=matvec, dtype=op.dtype), bar


def top_eigenpairs(
    op, r: int, tol: float = 1e-9, seed: int = 0, progress: bool = False
) -> Eigenpairs:
    """The ``r`` largest (algebraic) eigenpairs of a symmetric operator by Lanczos (ARPACK's
    implicitly restarted Lanczos, ``scipy.sparse.linalg.eigsh``), largest first."""
    from scipy.sparse.linalg import eigsh

    n = op.shape[0]
    if not 1 <= r < n:
        raise CurvatureError(f"r = {r} eigenpairs need 1 <= r < the {n} parameters")
    counted, bar = _counted(op, f"Lanczos, top {r}", progress)
    v0 = np.random.default_rng(seed).standard_normal(n).astype(op.dtype)
    try:
        values, vectors = eigsh(counted, k=r, which="LA", tol=tol, v0=v0)
    finally:
        bar.close()
    order = np.argsort(values)[::-1]
    return Eigenpairs(values[order], vectors[:, order], bar.products)


def hutchinson_trace(
    op, samples: int = 32, seed: int = 0, progress: bool = False
) -> tuple[float, float]:
    """(estimate, standard error) of the trace: the mean of zᵀ A z over Rademacher z."""
    if samples < 2:
        raise CurvatureError(f"Hutchinson's estimate needs >= 2 samples, got {samples}")
    counted, bar = _counted(op, "Hutchinson trace", progress)
    rng = np.random.default_rng(seed)
    n = op.shape[0]
    values = []
    with bar:
        for _ in range(samples):
            z = rng.choice((-1.0, 1.0), size=n)
            values.append(float(z @ counted.matvec(z)))
    return float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(samples))


def forget_batches(
    examples: Sequence[Any], pad_token_id: int, device: torch.device, batch_size: int = 16
) -> list[dict[str, torch.Tensor]]:
    """Collated batches of tokenised forget examples (right padding, labels -100 off the
    response)."""
    from llm.batches import collate_to

    return [
        collate_to(examples[i : i + batch_size], pad_token_id, device)
        for i in range(0, len(examples), batch_size)
    ]


def _written_out_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **_):
    """transformers' eager attention with the softmax in the inputs' dtype (theirs upcasts to
    float32, which caps a float64 check at float32's precision). Shapes as theirs:
    query (B, H, T, d), key/value (B, H_kv, T, d) -> output (B, T, H, d)."""
    groups = module.num_key_value_groups
    key = key.repeat_interleave(groups, dim=1)  # (B, H, T, d)
    value = value.repeat_interleave(groups, dim=1)
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, T, T)
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = torch.softmax(weights, dim=-1)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


ATTENTION = "pathdep_written_out"


def with_eager_attention(model: torch.nn.Module) -> torch.nn.Module:
    """Forward-mode AD (the GGN's J v) needs attention written out (no fused kernel): switch the
    model to :func:`_written_out_attention`, registered with transformers' AttentionInterface."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTENTION, _written_out_attention)
    # Without a mask function of its own, transformers passes a custom attention no mask at all
    # (it assumes a backend that masks itself): the causal and padding mask would be lost.
    AttentionMaskInterface.register(ATTENTION, eager_mask)
    setter: Callable[[str], Any] | None = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter(ATTENTION)
    else:  # pragma: no cover - older transformers
        model.config._attn_implementation = ATTENTION
    return model
