r"""Symmetry metrics of stacked responses: the one home of that mathematics.

Notation (``docs/API.md``): ``u[k] = f(g_k x)`` is the raw model output for
the input rotated by the quadrature element :math:`g_k` (rotation matrix
:math:`R_k`), stacked along axis 0. ``kind`` says how the output transforms
(:data:`COMPONENT_AXES` is the only table of it in symmd):

=========  =================  ===============================  ===============
kind       component axes     back-transform z = rho(g)^-1 u   example
=========  =================  ===============================  ===============
scalar     none               :math:`E`                        energy
vector     last (3)           :math:`F R`                      forces [N, 3]
rank2      last two (3, 3)    :math:`R^T S R`                  stress [3, 3]
spherical  last (2l+1)        not back-transformed here        o3_mu blocks
=========  =================  ===============================  ===============

- twirl :math:`\Pi(x) = \sum_k w_k z_k` (exactly equivariant when the rule
  is exact for the response);
- equivariance error :math:`A(x) = \sqrt{\sum_k w_k \|z_k - \Pi\|^2}`, the
  norm taken over the component axes; a second moment of :math:`z`, so a rule
  of degree :math:`L` gives it exactly only for responses band-limited to
  :math:`L/2`;
- unbiased estimate from :math:`m \ge 2` Haar-random draws (not the rule
  above): the sample variance
  :math:`\widehat{A^2} = \frac{1}{m-1}\sum_j \|z_j - \bar z\|^2`;
- character spectrum
  :math:`B_\beta = d_\beta \sum_{mn} \|\sum_k w_k D^\beta_{mn}(g_k) u_k\|^2`,
  :math:`d_\beta = 2\lambda + 1`, summed over the component axes. Over all
  :math:`\beta`, Parseval gives :math:`\sum_k w_k \|u_k\|^2`
  (:func:`mean_square`);
- aliasing of a rule :math:`S^\beta_Q = \sum_k w_k D^\beta(g_k)` and the
  twirl residual it predicts from the coefficients above its degree
  (:func:`predict_residuals`; :mod:`symmd.recommend` makes the decision).

Every function keeps the sample axes (everything between axis 0 and the
component axes), vectorizes over rotations and returns float64. The kernels
:func:`back_rotate`, :func:`weighted_sum` and :func:`sample_variance` are
TorchScript-compatible: the exported model (:mod:`symmd.export`) runs the
same code inside MD engines.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from typing import Optional

import torch

from .o3 import Quadrature, proper_part, quadrature, wigner_d_series

__all__ = [
    "COMPONENT_AXES",
    "TRANSFORMABLE",
    "aliasing",
    "average",
    "back_rotate",
    "back_transform",
    "character_spectrum",
    "equivariance_error",
    "mean_square",
    "predict_residuals",
    "reduce_components",
    "sample_error",
    "sample_variance",
    "sectors",
    "twirl_and_error",
    "weighted_sum",
]

#: number of trailing component axes of each kind of response
COMPONENT_AXES = {"scalar": 0, "vector": 1, "rank2": 2, "spherical": 1}
#: kinds that :func:`back_transform` knows how to bring back to the input frame
TRANSFORMABLE = ("scalar", "vector", "rank2")


def _check_kind(kind: str, allowed: Sequence[str] = TRANSFORMABLE) -> int:
    if kind not in allowed:
        raise ValueError(f"kind must be one of {list(allowed)}, got {kind!r}")
    return COMPONENT_AXES[kind]


def _prepare(
    u: torch.Tensor, q: Quadrature, kind: str, allowed: Sequence[str] = TRANSFORMABLE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    if not isinstance(q, Quadrature):
        raise TypeError(f"q must be a symmd.o3.Quadrature, got {type(q).__name__}")
    n_comp = _check_kind(kind, allowed)
    u = torch.as_tensor(u)
    if u.ndim < 1 or u.shape[0] != len(q):
        raise ValueError(
            f"u must be stacked along axis 0 with one slice per rotation: expected "
            f"shape [{len(q)}, ...], got {tuple(u.shape)}"
        )
    if kind in TRANSFORMABLE and (
        u.ndim < 1 + n_comp or tuple(u.shape[u.ndim - n_comp :]) != (3,) * n_comp
    ):
        expected = "[K, ...]" + "".join(", 3" for _ in range(n_comp))
        raise ValueError(f"a {kind} response must have shape {expected}, got {tuple(u.shape)}")
    u = u.to(torch.float64)
    return u, q.rotations.to(u.device), q.weights.to(u.device), n_comp


def reduce_components(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Sum of ``x`` over the component axes of ``kind`` (e.g. a squared norm)."""
    n_comp = COMPONENT_AXES[kind]
    return x.sum(dim=tuple(range(x.ndim - n_comp, x.ndim))) if n_comp else x


def back_rotate(u: torch.Tensor, rot: torch.Tensor, n_comp: int) -> torch.Tensor:
    """:math:`z_k = \\rho(g_k)^{-1} u_k` for ``u [K, ..., 3 x n_comp]`` and
    ``rot [K, 3, 3]``: ``u`` itself (``n_comp = 0``), :math:`u R` (1) or
    :math:`R^T u R` (2), in the dtype of ``u``. TorchScript-compatible."""
    if n_comp == 0:
        return u
    if n_comp == 1:
        return torch.einsum("k...i,kij->k...j", u, rot)
    return torch.einsum("kai,k...ab,kbj->k...ij", rot, u, rot)


def weighted_sum(w: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """:math:`\\sum_k w_k z_k` over axis 0 (``w [K]``, ``z [K, ...]``).
    TorchScript-compatible."""
    return torch.tensordot(w, z, dims=1)


def sample_variance(z: torch.Tensor, n_comp: int) -> torch.Tensor:
    """Unbiased :math:`\\widehat{A^2} = \\frac{1}{m-1}\\sum_j \\|z_j - \\bar z\\|^2` of
    ``m = z.shape[0] >= 2`` back-transformed draws ``z [m, ..., 3 x n_comp]``,
    the norm taken over the ``n_comp`` trailing component axes. Returns the
    sample axes, in the dtype of ``z``. TorchScript-compatible."""
    dev = z - z.mean(0)
    sq = dev * dev
    if n_comp > 0:
        sq = sq.flatten(sq.dim() - n_comp).sum(-1)
    return sq.sum(0) / (z.shape[0] - 1)


def back_transform(u: torch.Tensor, q: Quadrature, kind: str) -> torch.Tensor:
    """:math:`z_k = \\rho(g_k)^{-1} u_k`: responses brought back to the input frame.

    ``u``: ``[K, ...]`` (see the module table for the component axes).
    Returns float64 with the shape of ``u``.
    """
    u, rot, _, n_comp = _prepare(u, q, kind)
    return back_rotate(u, rot, n_comp)


def twirl_and_error(u: torch.Tensor, q: Quadrature, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Twirl :math:`\\Pi` and equivariance error :math:`A` from one back-transform.

    Returns ``(Pi, A)``: float64, ``Pi`` of shape ``u.shape[1:]``, ``A`` with
    the sample axes only (component axes reduced, units of ``u``). ``A`` is
    exact when the rule's degree is at least twice the response's highest
    :math:`\\lambda` (it is a second moment).
    """
    u, rot, w, _ = _prepare(u, q, kind)
    z = back_rotate(u, rot, COMPONENT_AXES[kind])
    pi = weighted_sum(w, z)
    dev = z - pi
    var = weighted_sum(w, reduce_components(dev * dev, kind))
    return pi, var.clamp_min(0.0).sqrt()


def average(u: torch.Tensor, q: Quadrature, kind: str) -> torch.Tensor:
    """Twirl :math:`\\Pi = \\sum_k w_k z_k`, float64 of shape ``u.shape[1:]``."""
    u, rot, w, n_comp = _prepare(u, q, kind)
    return weighted_sum(w, back_rotate(u, rot, n_comp))


def equivariance_error(u: torch.Tensor, q: Quadrature, kind: str) -> torch.Tensor:
    """:math:`A = \\sqrt{\\sum_k w_k \\|z_k - \\Pi\\|^2}`, in the units of ``u``.

    Returns float64 with the sample axes of ``u`` (component axes reduced):
    a 0-d tensor for an energy ``[K]``, ``[N]`` for forces ``[K, N, 3]``,
    0-d for a stress ``[K, 3, 3]`` (Frobenius norm).
    """
    return twirl_and_error(u, q, kind)[1]


def sample_error(u: torch.Tensor, q: Quadrature, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Unbiased :math:`\\widehat{A^2}` from ``m = len(q) >= 2`` Haar-random draws.

    The sample variance of the back-transformed responses (denominator
    :math:`m - 1`), per sample (float64, sample axes kept), and its Gaussian
    standard error :math:`\\widehat{A^2}\\sqrt{2/((m-1) n_c)}`, with
    :math:`n_c` the scalar components per sample (1, 3 or 9). The rule's
    weights are ignored: the draws count equally.
    """
    m = len(q)
    if m < 2:
        raise ValueError(f"an unbiased estimate needs at least 2 rotations, got {m}")
    u, rot, _, n_comp = _prepare(u, q, kind)
    a2 = sample_variance(back_rotate(u, rot, n_comp), n_comp)
    return a2, a2 * math.sqrt(2.0 / ((m - 1) * 3**n_comp))


def mean_square(u: torch.Tensor, q: Quadrature, kind: str = "scalar") -> torch.Tensor:
    """:math:`\\langle\\|u\\|^2\\rangle_G = \\sum_k w_k \\|u_k\\|^2`, the total weight
    of the character spectrum (Parseval), float64 with the sample axes."""
    u, _, w, _ = _prepare(u, q, kind, tuple(COMPONENT_AXES))
    return weighted_sum(w, reduce_components(u * u, kind))


def sectors(
    rot: torch.Tensor, w: torch.Tensor, max_lambda: int
) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
    r"""Yield ``(lam, sigma, w_k p_beta(g_k) [K], D^lam(R_k) [K, 2lam+1, 2lam+1])``
    for every O(3) irrep with ``lam <= max_lambda``, so that
    :math:`\sum_k w_k D^\beta(g_k) \otimes u_k` is one einsum per sector.

    The parity factor of an improper :math:`g` is
    :math:`p_\beta = \sigma (-1)^\lambda = \pm 1`: the weights split into
    ``w`` and ``w det(g)``.
    """
    _, det = proper_part(rot)
    for lam, d in enumerate(wigner_d_series(max_lambda, rot)):
        for sigma in (1, -1):
            yield lam, sigma, (w if sigma * (-1) ** lam == 1 else w * det), d


def character_spectrum(
    u: torch.Tensor, q: Quadrature, max_lambda: int, kind: str = "scalar"
) -> dict[tuple[int, int], torch.Tensor]:
    """Character spectrum :math:`B_{(\\lambda,\\sigma)}` for ``lam <= max_lambda``.

    ``u`` are the raw responses in the rotated frame (not back-transformed).
    ``kind`` only says which trailing axes are output components, summed
    over (the spectrum does not depend on how ``u`` transforms).

    Returns ``{(lam, sigma): float64 tensor}`` with the sample axes of ``u``.
    The rule must contain improper elements (to separate the parities) and
    have ``degree >= 2 * max_lambda`` (exact for responses band-limited to
    ``max_lambda``); random rules (degree ``None``) give Monte Carlo estimates.
    The weight above ``max_lambda`` is :func:`mean_square` minus the sum.
    """
    u, rot, w, _ = _prepare(u, q, kind, tuple(COMPONENT_AXES))
    if isinstance(max_lambda, bool) or not isinstance(max_lambda, int) or max_lambda < 0:
        raise ValueError(f"max_lambda must be a non-negative int, got {max_lambda!r}")
    if q.degree is not None and q.degree < 2 * max_lambda:
        raise ValueError(
            f"the quadrature {q.name!r} has degree {q.degree}, which cannot resolve "
            f"the spectrum up to max_lambda={max_lambda} (needs degree >= "
            f"{2 * max_lambda}); use symmd.o3.quadrature({2 * max_lambda}) or lower "
            "max_lambda"
        )
    _, det = proper_part(rot)
    if not (det < 0).any():
        raise ValueError(
            f"the quadrature {q.name!r} has no improper elements, so it cannot "
            "separate the parities sigma = +1 and -1; build it with inversion=True"
        )
    spectrum = {}
    for lam, sigma, wk, d in sectors(rot, w, max_lambda):
        m = torch.einsum("k,kmn,k...->mn...", wk, d, u)
        spectrum[(lam, sigma)] = (2 * lam + 1) * reduce_components((m * m).sum(dim=(0, 1)), kind)
    return spectrum


def aliasing(q: Quadrature, max_lambda: int) -> dict[tuple[int, int], torch.Tensor]:
    """:math:`S^\\beta_Q = \\sum_k w_k D^\\beta(g_k)` for ``lam <= max_lambda``:
    ``{(lam, sigma): float64 [2lam+1, 2lam+1]}``; zero for the sectors the
    rule integrates exactly, the identity for (0, +1)."""
    return {
        (lam, sigma): torch.einsum("k,kmn->mn", wk, d)
        for lam, sigma, wk, d in sectors(q.rotations, q.weights, max_lambda)
    }


@functools.cache
def _rule_aliasing(degree: int, max_lambda: int) -> dict[tuple[int, int], torch.Tensor]:
    return aliasing(quadrature(degree), max_lambda)


def predict_residuals(
    u: torch.Tensor,
    probe: Quadrature,
    kind: str,
    degrees: Sequence[int],
    *,
    max_lambda: Optional[int] = None,
    reorient: bool = False,
) -> dict[int, torch.Tensor]:
    r"""Predicted twirl residual of ``symmd.o3.quadrature(L)`` for each ``L`` in ``degrees``.

    With :math:`c^\beta = d_\beta \sum_k w_k D^\beta(g_k) z_k` measured on the
    ``probe`` rule, the residual of a rule :math:`Q` is
    :math:`r_Q = \sum_{\beta \ne (0,+1)} \langle S^\beta_Q, c^\beta\rangle`;
    with a random global orientation at every call (``reorient=True``) its
    mean square is :math:`\sum_\beta \|S^{\beta\,T}_Q c^\beta\|_F^2 / d_\beta`.

    ``u``: responses ``[K, ...]`` on the ``probe`` rule (rotated frame).
    ``max_lambda``: the highest sector used (default ``probe.degree // 2 + 1``).
    Returns ``{L: float64 tensor}`` with the sample axes of ``u`` (norm over
    the component axes), in the units of ``u``.
    """
    if probe.degree is None:
        raise ValueError(
            "the probe rule must have a degree (random samples cannot resolve the spectrum)"
        )
    if max_lambda is None:
        max_lambda = probe.degree // 2 + 1
    z = back_transform(u, probe, kind)
    n_comp = COMPONENT_AXES[kind]
    sample_shape = z.shape[1 : z.ndim - n_comp]
    full_shape = z.shape[1:]
    out = {
        degree: torch.zeros(
            sample_shape if reorient else full_shape, dtype=torch.float64, device=z.device
        )
        for degree in degrees
    }
    for lam, sigma, wk, d in sectors(
        probe.rotations.to(z.device), probe.weights.to(z.device), max_lambda
    ):
        if (lam, sigma) == (0, 1):
            continue
        coeff = (2 * lam + 1) * torch.einsum("k,kmn,k...->mn...", wk, d, z)
        for degree in degrees:
            s = _rule_aliasing(degree, max_lambda)[(lam, sigma)].to(z.device)
            if reorient:
                sc = torch.einsum("mp,mn...->pn...", s, coeff)
                out[degree] += reduce_components((sc * sc).sum(dim=(0, 1)), kind) / (2 * lam + 1)
            else:
                out[degree] += torch.einsum("mn,mn...->...", s, coeff)
    if reorient:
        return {degree: value.clamp_min(0).sqrt() for degree, value in out.items()}
    return {degree: reduce_components(value * value, kind).sqrt() for degree, value in out.items()}
