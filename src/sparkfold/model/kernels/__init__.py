"""One kernel-dispatch layer for the hot operations of the model.

Modules own their parameters and call the functions here; they never take ``use_*`` flags.
The backend is chosen once per forward from ``RuntimeConfig.kernels`` with the
:func:`use_backend` context manager (``"auto"`` or a backend name). ``"reference"`` is the
plain-PyTorch specification; every fast backend is tested against it in fp32 and bf16.

Operations:

* :func:`attention` — softmax attention with additive biases:
  ``softmax(q·kᵀ·scale + Σ biases) · v`` over the key axis.
* :func:`triangle_multiplication` — the contraction of AF2 Alg. 11/12 over the shared node.
* :func:`layer_norm` — LayerNorm with fp32 statistics.
* :func:`sigmoid_gate` — ``mask · σ(g) · p``, the gating of the triangle projections, written
  into a given buffer.
* :func:`outer_product_update` — the outer product mean's update (AF2 Alg. 10, OpenFold
  variant): ``linear_out(flatten(Σ_s a_si ⊗ b_sj)) / (norm + eps)``, optionally added into a
  tensor in place.
* :func:`contiguous` — a dense copy of a view whose channel axis is unit-stride (e.g. the
  transposed pair), the layout change around column and ending-node attention.
* :func:`triangle_update` — the whole triangle multiplicative update (AF2 Alg. 11/12) from
  ``z`` to ``σ(linear_g(LN_in z)) · linear_z(LN_out x)``, optionally added into a tensor in
  place; parameters in a :class:`TriangleWeights`.

:func:`has_fast` tells whether an op resolves to something other than the reference, so that a
module can keep its own memory strategy (chunking) for the reference path.
"""

import contextlib
import contextvars
import importlib
import logging
from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple

import torch

log = logging.getLogger(__name__)

__all__ = [
    "Backend",
    "register_backend",
    "available_backends",
    "use_backend",
    "current_backend",
    "attention",
    "triangle_multiplication",
    "layer_norm",
    "outer_product_update",
    "contiguous",
    "sigmoid_gate",
    "TriangleWeights",
    "triangle_update",
    "has_fast",
]


@dataclass(frozen=True)
class Backend:
    """A kernel backend.

    Attributes:
        name: registry name.
        module: import path of the module providing ``attention``/``triangle_multiplication``/
            ``layer_norm`` (any may be missing: the reference is used for that op), plus
            ``is_available() -> bool`` and ``supports(op, dtype, device, **shape_info) -> bool``.
        priority: order tried by ``"auto"`` (higher first).
    """

    name: str
    module: str
    priority: int = 0

    def load(self):
        return importlib.import_module(self.module)


_REGISTRY: dict[str, Backend] = {}
_CURRENT: contextvars.ContextVar[str] = contextvars.ContextVar("sparkfold_kernels", default="reference")


#: Resolved implementations per (op, dtype, device type, backend in force, channel count for
#: layer_norm). Backends decide ``supports`` from exactly these, so the decision is made once.
_RESOLVED: dict[tuple, Callable] = {}


def register_backend(backend: Backend) -> None:
    """Add (or replace) a backend in the registry."""
    _REGISTRY[backend.name] = backend
    _RESOLVED.clear()


register_backend(Backend("reference", "sparkfold.model.kernels.reference", priority=-100))
# Fast backends (helper PERF): Triton kernels first, then PyTorch's fused SDPA/LayerNorm.
register_backend(Backend("sdpa", "sparkfold.model.kernels.sdpa", priority=10))
register_backend(Backend("triton", "sparkfold.model.kernels.triton_backend", priority=20))


def available_backends() -> dict[str, bool]:
    """Every registered backend and whether it can run on this machine."""
    out = {}
    for name, backend in _REGISTRY.items():
        try:
            out[name] = bool(backend.load().is_available())
        except Exception as exc:  # an optional wheel that fails to import is just unavailable
            log.debug("kernel backend %s unavailable: %s", name, exc)
            out[name] = False
    return out


@contextlib.contextmanager
def use_backend(name: str):
    """Run the enclosed model code with backend ``name`` (or ``"auto"``)."""
    if name != "auto" and name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown kernel backend {name!r}; choose 'auto' or one of: {known}")
    if name != "auto" and not available_backends().get(name, False):
        raise RuntimeError(
            f"kernel backend {name!r} is not available on this machine; run `sparkfold doctor` "
            "to see why, or use kernels='auto'"
        )
    token = _CURRENT.set(name)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_backend() -> str:
    """The backend name in force (possibly ``"auto"``)."""
    return _CURRENT.get()


def _resolve(op: str, dtype: torch.dtype, device: torch.device, **info) -> Callable:
    """The implementation of ``op`` for this call, cached per dispatch key.

    The key is (op, dtype, device type, backend in force, and for ``layer_norm`` the channel
    count): a backend's ``supports`` must decide from these alone. Caching keeps the per-call
    dispatch to one dict lookup (the trunk makes ~10⁴ kernel calls per forward).
    """
    name = _CURRENT.get()
    shape = info.get("shape")
    key = (op, dtype, device.type, name, shape[-1] if op == "layer_norm" and shape else None)
    fn = _RESOLVED.get(key)
    if fn is None:
        fn = _RESOLVED[key] = _resolve_uncached(name, op, dtype, device, **info)
    return fn


def _resolve_uncached(name: str, op: str, dtype: torch.dtype, device: torch.device, **info) -> Callable:
    if name != "auto":
        mod = _REGISTRY[name].load()
        fn = getattr(mod, op, None)
        if fn is not None and (not hasattr(mod, "supports") or mod.supports(op, dtype, device, **info)):
            return fn
        return getattr(_REGISTRY["reference"].load(), op)
    for backend in sorted(_REGISTRY.values(), key=lambda b: -b.priority):
        try:
            mod = backend.load()
        except Exception:
            continue
        fn = getattr(mod, op, None)
        if fn is None or not mod.is_available():
            continue
        if hasattr(mod, "supports") and not mod.supports(op, dtype, device, **info):
            continue
        return fn
    return getattr(_REGISTRY["reference"].load(), op)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    biases: list[torch.Tensor] | tuple[torch.Tensor, ...] = (),
    scale: float | None = None,
    gate: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax attention with additive biases, optionally gated: ``σ(gate) · attention``.

    Args:
        q: ``[*, H, Q, C]`` queries (unscaled).
        k: ``[*, H, K, C]`` keys.
        v: ``[*, H, K, C_v]`` values.
        biases: tensors broadcastable to ``[*, H, Q, K]`` added to the logits (mask biases are
            finite, e.g. ``1e9 * (mask - 1)``, so fully masked rows give a uniform softmax).
        scale: logit scale applied to ``q`` before the product; default ``1/sqrt(C)``.
        gate: ``[*, H, Q, C_v]`` pre-sigmoid output gate (AF2's per-head gating), or ``None``.

    Returns:
        ``[*, H, Q, C_v]``.
    """
    fn = _resolve("attention", q.dtype, q.device)
    return fn(q, k, v, list(biases), scale, gate)


def triangle_multiplication(
    a: torch.Tensor, b: torch.Tensor, direction: Literal["outgoing", "incoming"]
) -> torch.Tensor:
    """AF2 Alg. 11/12 contraction over the third node, channel-last.

    ``outgoing``: ``x[i, j, c] = Σ_k a[i, k, c] · b[j, k, c]``;
    ``incoming``: ``x[i, j, c] = Σ_k a[k, i, c] · b[k, j, c]``.
    Inputs ``[*, N, N, C]``; output ``[*, N, N, C]``.
    """
    fn = _resolve("triangle_multiplication", a.dtype, a.device)
    return fn(a, b, direction)


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """LayerNorm over the last axis with fp32 statistics; output in ``x``'s dtype."""
    fn = _resolve("layer_norm", x.dtype, x.device, shape=x.shape)
    return fn(x, weight, bias, eps)


def contiguous(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a dense tensor (``x`` itself when already dense); values unchanged."""
    if x.is_contiguous():
        return x
    fn = _resolve("contiguous", x.dtype, x.device)
    return fn(x)


def outer_product_update(
    a: torch.Tensor,
    b: torch.Tensor,
    norm: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    eps: float,
    add_into: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """The outer product mean's update (AF2 Alg. 10, OpenFold variant: ``linear_out`` before
    the division).

    ``a [*, I, S, C]``, ``b [*, J, S, E]`` (the masked projections, residue-major),
    ``norm [*, I, J, 1]`` fp32 mask counts, ``weight [C_z, C·E]``, ``bias [C_z]`` →
    ``(linear_out(flatten_{c,e}(Σ_s a_isc·b_jse)) in fp32 / (norm + eps))`` in ``a``'s dtype,
    ``[*, I, J, C_z]``; or ``add_into`` with it added in place (autograd disabled).
    ``chunk_size``: rows ``i`` per slice of the implementation's temporaries (memory only).
    """
    fn = _resolve("outer_product_update", a.dtype, a.device)
    return fn(a, b, norm, weight, bias, eps, add_into, chunk_size)


def sigmoid_gate(p: torch.Tensor, g: torch.Tensor, mask: torch.Tensor,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """``mask · σ(g) · p`` for ``p, g [*, C, I, J]``, ``mask`` broadcastable (``[*, 1, I, J]``);
    written into ``out`` when given (any strides, e.g. a row slice of a larger buffer)."""
    fn = _resolve("sigmoid_gate", p.dtype, p.device)
    return fn(p, g, mask, out)


def has_fast(op: str, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether ``op`` resolves, under the backend in force and for this dtype and device, to an
    implementation other than the reference's (e.g. a fused kernel whose memory behaviour makes
    a module's own chunking unnecessary)."""
    return _resolve(op, dtype, device) is not getattr(_REGISTRY["reference"].load(), op)


class TriangleWeights(NamedTuple):
    """Parameters of :func:`triangle_update` (``C``: hidden channels, ``C_z``: pair channels).

    Attributes:
        ln_in_w, ln_in_b: ``[C_z]`` LayerNorm of ``z``.
        w_ab, b_ab: ``[4C, C_z]``, ``[4C]``: ``linear_{a_p, a_g, b_p, b_g}`` stacked in that
            order (``TriangleMultiplication.fused_projection()``).
        w_g, b_g: ``[C_z, C_z]``, ``[C_z]``: the output gate ``linear_g``.
        ln_out_w, ln_out_b: ``[C]`` LayerNorm of the contraction ``x``.
        w_z, b_z: ``[C_z, C]``, ``[C_z]``: the output projection ``linear_z``.
        eps: the LayerNorms' epsilon.
    """

    ln_in_w: torch.Tensor
    ln_in_b: torch.Tensor
    w_ab: torch.Tensor
    b_ab: torch.Tensor
    w_g: torch.Tensor
    b_g: torch.Tensor
    ln_out_w: torch.Tensor
    ln_out_b: torch.Tensor
    w_z: torch.Tensor
    b_z: torch.Tensor
    eps: float = 1e-5


def triangle_update(
    z: torch.Tensor,
    mask: torch.Tensor | None,
    weights: TriangleWeights,
    direction: Literal["outgoing", "incoming"],
    add_into: torch.Tensor | None = None,
    channel_block: int | None = None,
) -> torch.Tensor:
    """The triangle multiplicative update (AF2 Alg. 11/12) of ``z [*, N, N, C_z]``.

    ``z̃ = LN_in(z)``; ``a = mask·σ(linear_a_g(z̃))·linear_a_p(z̃)``, ``b`` likewise; outgoing
    ``x_ij = Σ_k a_ik b_jk``, incoming ``x_ij = Σ_k a_ki b_kj``; update
    ``σ(linear_g(z̃)) · linear_z(LN_out(x))``. ``mask``: ``[*, N, N]`` or ``None`` (ones).

    ``channel_block`` (a memory strategy, not maths): a backend may make ``a`` and ``b`` and
    contract them this many channels at a time, so that they never exist in full; the
    reference ignores it.

    Returns:
        ``[*, N, N, C_z]`` update, or ``add_into`` (which may be ``z`` itself) with the update
        added in place (autograd disabled).
    """
    fn = _resolve("triangle_update", z.dtype, z.device)
    return fn(z, mask, weights, direction, add_into, channel_block)
