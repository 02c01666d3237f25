r"""Cartesian <-> spherical components of vectors and rank-2 tensors.

A polar vector is the irrep :math:`(1, +1)`, with :math:`D^1(R) = R` in the
basis of :func:`symmd.o3.wigner_d`, so its spherical components are its
Cartesian ones. A rank-2 polar tensor :math:`T \to R T R^T` splits as
:math:`0 \oplus 1 \oplus 2`:

- :math:`(0, +1)`: :math:`\mathrm{tr}\,T / \sqrt 3` (1 component);
- :math:`(1, -1)`: the antisymmetric part, an axial vector (3 components);
- :math:`(2, +1)`: the symmetric traceless part (5 components).

The change of basis is e3nn's orthonormal ``CartesianTensor("ij")``, so
:math:`\|T\|_F^2` equals the sum of the squared spherical components and every
block transforms with :func:`symmd.o3.representation`.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["cartesian_to_spherical", "spherical_to_cartesian"]

_BLOCKS = {"vector": ((1, 1),), "rank2": ((0, 1), (1, -1), (2, 1))}


@functools.cache
def _rank2_basis() -> torch.Tensor:
    """float64 ``[9, 3, 3]`` orthonormal change of basis (0e, 1e, 2e)."""
    from e3nn.io import CartesianTensor

    return CartesianTensor("ij").reduced_tensor_products().change_of_basis.to(torch.float64)


def _check_kind(kind: str) -> str:
    if kind not in _BLOCKS:
        raise ValueError(f"kind must be 'vector' or 'rank2', got {kind!r}")
    return kind


def cartesian_to_spherical(x: torch.Tensor, kind: str) -> dict[tuple[int, int], torch.Tensor]:
    """Spherical blocks of a Cartesian vector ``[..., 3]`` or tensor ``[..., 3, 3]``.

    Returns ``{(lam, sigma): [..., 2lam+1]}`` in the dtype and device of ``x``.
    """
    kind = _check_kind(kind)
    if kind == "vector":
        if x.shape[-1:] != (3,):
            raise ValueError(f"a vector must have shape [..., 3], got {tuple(x.shape)}")
        return {(1, 1): x}
    if x.shape[-2:] != (3, 3):
        raise ValueError(f"a rank-2 tensor must have shape [..., 3, 3], got {tuple(x.shape)}")
    q = _rank2_basis().to(dtype=x.dtype, device=x.device)
    flat = torch.einsum("kij,...ij->...k", q, x)
    return {(0, 1): flat[..., 0:1], (1, -1): flat[..., 1:4], (2, 1): flat[..., 4:9]}


def spherical_to_cartesian(blocks: dict[tuple[int, int], torch.Tensor], kind: str) -> torch.Tensor:
    """Inverse of :func:`cartesian_to_spherical`.

    Missing blocks count as zero; returns ``[..., 3]`` or ``[..., 3, 3]``.
    """
    kind = _check_kind(kind)
    unknown = set(blocks) - set(_BLOCKS[kind])
    if unknown:
        raise ValueError(
            f"blocks {sorted(unknown)} do not belong to a {kind}; expected keys "
            f"among {list(_BLOCKS[kind])}"
        )
    if kind == "vector":
        return blocks[(1, 1)]
    ref = next(iter(blocks.values()))
    parts = []
    for lam, sigma in _BLOCKS[kind]:
        part = blocks.get((lam, sigma))
        if part is None:
            part = torch.zeros(*ref.shape[:-1], 2 * lam + 1, dtype=ref.dtype, device=ref.device)
        parts.append(part)
    flat = torch.cat(parts, dim=-1)
    q = _rank2_basis().to(dtype=flat.dtype, device=flat.device)
    return torch.einsum("kij,...k->...ij", q, flat)
