r"""Symmetry metrics of stacked responses.

Notation (``../shared/API.md``): ``u[k] = f(g_k x)`` is the raw model output for
the input rotated by the quadrature element :math:`g_k` (rotation matrix
:math:`R_k`), stacked along axis 0. ``kind`` says how the output transforms:

========  =================  ============================  ===============
kind      component axes     back-transform z = rho(g)^-1 u   example
========  =================  ============================  ===============
scalar    none               :math:`E`                       energy
vector    last (3)           :math:`F R`                     forces [N, 3]
rank2     last two (3, 3)    :math:`R^T S R`                 stress [3, 3]
========  =================  ============================  ===============

- twirl :math:`\Pi(x) = \sum_k w_k z_k` (exactly equivariant when the rule
  is exact for the response);
- equivariance error :math:`A(x) = \sqrt{\sum_k w_k \|z_k - \Pi\|^2}`, the
  norm taken over the component axes;
- character spectrum
  :math:`B_\beta = d_\beta \sum_{mn} \|\sum_k w_k D^\beta_{mn}(g_k) u_k\|^2`,
  :math:`d_\beta = 2\lambda + 1`, summed over the component axes. This single
  sum equals the double sum
  :math:`d_\beta \sum_{kk'} w_k w_{k'} \chi^\beta(g_k^{-1} g_{k'})
  \langle u_k, u_{k'}\rangle` and, over all :math:`\beta`, Parseval gives
  :math:`\sum_k w_k \|u_k\|^2`.

Every function keeps the sample axes (everything between axis 0 and the
component axes), vectorizes over rotations and returns float64.
"""

from __future__ import annotations

import torch

from .o3 import Quadrature, proper_part, wigner_d_series

__all__ = ["back_transform", "average", "equivariance_error", "character_spectrum"]

_N_COMPONENT_AXES = {"scalar": 0, "vector": 1, "rank2": 2}


def _prepare(u: torch.Tensor, q: Quadrature, kind: str):
    if not isinstance(q, Quadrature):
        raise TypeError(f"q must be a symmd.o3.Quadrature, got {type(q).__name__}")
    if kind not in _N_COMPONENT_AXES:
        raise ValueError(f"kind must be one of {list(_N_COMPONENT_AXES)}, got {kind!r}")
    u = torch.as_tensor(u)
    if u.ndim < 1 or u.shape[0] != len(q):
        raise ValueError(
            f"u must be stacked along axis 0 with one slice per rotation: expected "
            f"shape [{len(q)}, ...], got {tuple(u.shape)}"
        )
    n_comp = _N_COMPONENT_AXES[kind]
    if u.ndim < 1 + n_comp or tuple(u.shape[u.ndim - n_comp :]) != (3,) * n_comp:
        expected = "[K, ...]" + "".join(", 3" for _ in range(n_comp))
        raise ValueError(f"a {kind} response must have shape {expected}, got {tuple(u.shape)}")
    u = u.to(torch.float64)
    rot = q.rotations.to(u.device)
    w = q.weights.to(u.device)
    return u, rot, w, n_comp


def _reduce_components(x: torch.Tensor, n_comp: int) -> torch.Tensor:
    return x.sum(dim=tuple(range(x.ndim - n_comp, x.ndim))) if n_comp else x


def _back(u: torch.Tensor, rot: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "scalar":
        return u
    if kind == "vector":
        return torch.einsum("k...i,kij->k...j", u, rot)
    return torch.einsum("kai,k...ab,kbj->k...ij", rot, u, rot)


def back_transform(u: torch.Tensor, q: Quadrature, kind: str) -> torch.Tensor:
    """:math:`z_k = \\rho(g_k)^{-1} u_k`: responses brought back to the input frame.

    ``u``: ``[K, ...]`` (see the module table for the component axes).
    Returns float64 with the shape of ``u``.
    """
    u, rot, _, _ = _prepare(u, q, kind)
    return _back(u, rot, kind)


def average(u: torch.Tensor, q: Quadrature, kind: str) -> torch.Tensor:
    """Twirl :math:`\\Pi = \\sum_k w_k z_k`, float64 of shape ``u.shape[1:]``."""
    u, rot, w, _ = _prepare(u, q, kind)
    return torch.tensordot(w, _back(u, rot, kind), dims=1)


def equivariance_error(u: torch.Tensor, q: Quadrature, kind: str) -> torch.Tensor:
    """:math:`A = \\sqrt{\\sum_k w_k \\|z_k - \\Pi\\|^2}`, in the units of ``u``.

    Returns float64 with the sample axes of ``u`` (component axes reduced):
    a 0-d tensor for an energy ``[K]``, ``[N]`` for forces ``[K, N, 3]``,
    0-d for a stress ``[K, 3, 3]`` (Frobenius norm).
    """
    u, rot, w, n_comp = _prepare(u, q, kind)
    z = _back(u, rot, kind)
    dev = z - torch.tensordot(w, z, dims=1)
    var = torch.tensordot(w, _reduce_components(dev * dev, n_comp), dims=1)
    return var.clamp_min(0.0).sqrt()


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
    """
    u, rot, w, n_comp = _prepare(u, q, kind)
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
        spectrum[(lam, sigma)] = (2 * lam + 1) * _reduce_components((m * m).sum(dim=(0, 1)), n_comp)
    return spectrum


def sectors(rot: torch.Tensor, w: torch.Tensor, max_lambda: int):
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
