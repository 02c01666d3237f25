r"""Zero-cost projections implied by an invariant energy.

An energy invariant under translations and rotations has forces with zero net
force and zero net torque (the latter only when no direction is periodic) and
a symmetric stress. ``project_forces`` makes the minimal-norm (Euclidean, in
:math:`\mathbb R^{3N}`) change of the forces that restores these conditions:
with :math:`B` the :math:`3N \times 6` matrix whose columns are the rigid
translations :math:`t_a` and rotations :math:`\omega_a \times (r_i - c)` about
the centroid :math:`c`,

.. math:: F' = F - B (B^T B)^{+} B^T F,

the orthogonal projection onto the complement of rigid motions. Then
:math:`\sum_i F'_i = 0` and :math:`\sum_i r_i \times F'_i = 0` for any origin.
It conserves momentum and angular momentum; it does not make a direct-force
model equivariant.
"""

from __future__ import annotations

import numpy as np

__all__ = ["project_forces", "symmetrize_stress", "net_force", "net_torque"]


def net_force(forces: np.ndarray) -> np.ndarray:
    """:math:`\\sum_i F_i`, shape ``[3]``."""
    return np.asarray(forces).sum(axis=0)


def net_torque(positions: np.ndarray, forces: np.ndarray) -> np.ndarray:
    """:math:`\\sum_i r_i \\times F_i` about the origin, shape ``[3]``."""
    return np.cross(np.asarray(positions), np.asarray(forces)).sum(axis=0)


def project_forces(forces: np.ndarray, positions: np.ndarray, torque: bool) -> np.ndarray:
    """Minimal-norm change of ``forces [N, 3]`` (eV/A) to zero net force and,
    when ``torque`` is true, zero net torque about any origin.

    ``positions [N, 3]`` (A) are only used when ``torque`` is true; pass
    ``torque=False`` for structures with a periodic direction.
    """
    forces = np.asarray(forces, dtype=np.float64)
    projected = forces - forces.mean(axis=0)
    if not torque:
        return projected
    rel = np.asarray(positions, dtype=np.float64)
    rel = rel - rel.mean(axis=0)
    # rotation generators: column a of atom i is e_a x rel_i; with centred
    # positions they are orthogonal to the translations, so project separately
    gen = np.cross(np.eye(3)[None, :, :], rel[:, None, :])  # [N, 3 (a), 3 (xyz)]
    gram = np.einsum("nax,nbx->ab", gen, gen)  # the inertia tensor of unit masses
    coeff = np.linalg.pinv(gram, rcond=1e-10, hermitian=True) @ np.einsum(
        "nax,nx->a", gen, projected
    )
    return projected - np.einsum("a,nax->nx", coeff, gen)


def symmetrize_stress(stress: np.ndarray) -> np.ndarray:
    """Symmetric part :math:`(S + S^T)/2` of a ``[..., 3, 3]`` stress."""
    stress = np.asarray(stress)
    return (stress + np.swapaxes(stress, -1, -2)) / 2
