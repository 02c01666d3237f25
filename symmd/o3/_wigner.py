r"""Real Wigner-D matrices, O(3) representations and characters.

Basis: e3nn's real spherical harmonics (e3nn >= 0.6, where :math:`D^1(R) = R`
in Cartesian x, y, z order). Higher orders are built without Euler angles, by
coupling with e3nn's Clebsch-Gordan coefficients:

.. math:: D^\lambda(R) = Q_\lambda^T \left(D^{\lambda-1}(R) \otimes R\right) Q_\lambda,
   \qquad Q_\lambda = \sqrt{2\lambda+1}\; C^{(\lambda-1, 1, \lambda)},

with :math:`Q_\lambda` an isometry of the :math:`\lambda` block of
:math:`(\lambda-1) \otimes 1`. This is exact to round-off for any rotation
(Euler angles lose precision near gimbal lock) and batched over rotations.

An O(3) element :math:`g = \pm R` (R proper) acts on the irrep
:math:`\beta = (\lambda, \sigma)` as

.. math:: D^\beta(g) = p_\beta(g)\, D^\lambda(R), \qquad
   p_\beta(g) = 1 \text{ if } \det g = 1, \; \sigma (-1)^\lambda \text{ otherwise},

so :math:`\sigma = +1` is polar (inversion acts as :math:`(-1)^\lambda`) and
:math:`\sigma = -1` axial. The character is
:math:`\chi^\beta(g) = p_\beta(g)\, \sin((2\lambda+1)t/2) / \sin(t/2)` with
:math:`t` the rotation angle of :math:`R`.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["wigner_d", "wigner_d_series", "representation", "character", "proper_part"]


def _check_lambda(lam: int) -> int:
    if isinstance(lam, bool) or not isinstance(lam, int) or lam < 0:
        raise ValueError(f"lam must be a non-negative int, got {lam!r}")
    return lam


def _check_sigma(sigma: int) -> int:
    if sigma not in (1, -1):
        raise ValueError(f"sigma must be +1 (polar) or -1 (axial), got {sigma!r}")
    return int(sigma)


def _check_rotations(rotations: torch.Tensor) -> torch.Tensor:
    if not isinstance(rotations, torch.Tensor):
        raise TypeError(
            f"rotations must be a torch.Tensor [K, 3, 3], got {type(rotations).__name__}"
        )
    if rotations.ndim < 2 or rotations.shape[-2:] != (3, 3):
        raise ValueError(f"rotations must have shape [..., 3, 3], got {tuple(rotations.shape)}")
    return rotations


@functools.cache
def _coupling(lam: int) -> torch.Tensor:
    """float64 isometry ``[2lam-1, 3, 2lam+1]`` from (lam-1) x 1 to lam."""
    from e3nn import o3

    return o3.wigner_3j(lam - 1, 1, lam, dtype=torch.float64) * (2 * lam + 1) ** 0.5


def proper_part(rotations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``g = det(g) R``: returns ``(R [..., 3, 3], det [...])``."""
    rotations = _check_rotations(rotations)
    det = torch.sign(torch.linalg.det(rotations))
    return rotations * det[..., None, None], det


def wigner_d_series(max_lam: int, rotations: torch.Tensor) -> list[torch.Tensor]:
    """``[wigner_d(0, R), ..., wigner_d(max_lam, R)]`` in one recursion."""
    max_lam = _check_lambda(max_lam)
    rot, _ = proper_part(rotations)
    out = [torch.ones(*rot.shape[:-2], 1, 1, dtype=rot.dtype, device=rot.device)]
    if max_lam >= 1:
        out.append(rot)
    for ell in range(2, max_lam + 1):
        q = _coupling(ell).to(dtype=rot.dtype, device=rot.device)
        # D^l_ab = sum_{ij pq} Q_{ip a} D^{l-1}_ij R_pq Q_{jq b}, in O(l^3) steps
        y = torch.einsum("...pq,jqb->...pjb", rot, q)
        x = torch.einsum("...ij,...pjb->...ipb", out[-1], y)
        out.append(torch.einsum("ipa,...ipb->...ab", q, x))
    return out


def wigner_d(lam: int, rotations: torch.Tensor) -> torch.Tensor:
    """Real Wigner-D of the proper part of ``rotations``.

    Parameters
    ----------
    lam: the order :math:`\\lambda \\ge 0`.
    rotations: ``[..., 3, 3]`` orthogonal matrices (improper ones are reduced
        to their proper part :math:`\\det(g) g`).

    Returns
    -------
    ``[..., 2lam+1, 2lam+1]`` in the dtype and device of ``rotations``; a
    homomorphism, :math:`D(R_1 R_2) = D(R_1) D(R_2)`, orthogonal, and
    :math:`D^1(R) = R`.
    """
    return wigner_d_series(lam, rotations)[-1]


def _parity(lam: int, sigma: int, det: torch.Tensor) -> torch.Tensor:
    improper_sign = sigma * (-1) ** lam
    return torch.where(det > 0, torch.ones_like(det), improper_sign * torch.ones_like(det))


def representation(lam: int, sigma: int, rotations: torch.Tensor) -> torch.Tensor:
    """O(3) representation :math:`D^{(\\lambda,\\sigma)}(g) = p(g) D^\\lambda(R)`.

    ``[..., 2lam+1, 2lam+1]`` in the dtype and device of ``rotations``.
    """
    sigma = _check_sigma(sigma)
    _, det = proper_part(rotations)
    return _parity(lam, sigma, det)[..., None, None] * wigner_d(lam, rotations)


def character(lam: int, sigma: int, rotations: torch.Tensor) -> torch.Tensor:
    """Character :math:`\\chi^{(\\lambda,\\sigma)}(g)`, shape ``[...]``.

    The trace of :func:`representation`, equal to
    :math:`p(g) \\sin((2\\lambda+1)t/2)/\\sin(t/2)`.
    """
    sigma = _check_sigma(sigma)
    _, det = proper_part(rotations)
    trace = torch.diagonal(wigner_d(lam, rotations), dim1=-2, dim2=-1).sum(-1)
    return _parity(lam, sigma, det) * trace
