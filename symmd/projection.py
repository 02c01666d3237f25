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
import torch

__all__ = ["project_forces", "remove_rigid", "symmetrize_stress", "net_force", "net_torque"]


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
    forces_t = torch.as_tensor(np.asarray(forces, dtype=np.float64))
    positions_t = torch.as_tensor(np.asarray(positions, dtype=np.float64))
    return remove_rigid(forces_t, positions_t, bool(torque)).numpy()


def remove_rigid(forces: torch.Tensor, positions: torch.Tensor, torque: bool) -> torch.Tensor:
    """:func:`project_forces` on torch tensors (``[N, 3]``, the dtype and device
    of ``forces``; differentiable; TorchScript-compatible, used by the
    exported model of :func:`symmd.export`)."""
    projected = forces - forces.mean(0)
    if not torque:
        return projected
    rel = positions.to(forces.dtype)
    rel = rel - rel.mean(0)
    # rotation generators: column a of atom i is e_a x rel_i; with centred
    # positions they are orthogonal to the translations, so project separately
    eye = torch.eye(3, dtype=rel.dtype, device=rel.device)
    gen = torch.linalg.cross(eye[None, :, :], rel[:, None, :].expand(-1, 3, -1))  # [N, a, xyz]
    gram = torch.einsum("nax,nbx->ab", gen, gen)  # the inertia tensor of unit masses
    coeff = torch.linalg.pinv(gram, rtol=1e-10, hermitian=True) @ torch.einsum(
        "nax,nx->a", gen, projected
    )
    return projected - torch.einsum("a,nax->nx", coeff, gen)


def symmetrize_stress(stress: np.ndarray) -> np.ndarray:
    """Symmetric part :math:`(S + S^T)/2` of a ``[..., 3, 3]`` stress."""
    stress = np.asarray(stress)
    return (stress + np.swapaxes(stress, -1, -2)) / 2
