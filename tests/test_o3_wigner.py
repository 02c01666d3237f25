import re

import pytest
import torch
from helpers import random_rotations, tol

from symmd import o3


@pytest.mark.parametrize("lam", range(0, 8))
def test_wigner_d_is_a_homomorphism(lam, dtype):
    r1 = random_rotations(20, seed=1).to(dtype)
    r2 = random_rotations(20, seed=2).to(dtype)
    lhs = o3.wigner_d(lam, r1 @ r2)
    rhs = o3.wigner_d(lam, r1) @ o3.wigner_d(lam, r2)
    assert lhs.dtype == dtype and lhs.shape == (20, 2 * lam + 1, 2 * lam + 1)
    assert torch.allclose(lhs, rhs, atol=10 * tol(dtype), rtol=0)


@pytest.mark.parametrize("lam", range(0, 8))
def test_wigner_d_is_orthogonal_and_matches_e3nn(lam):
    """e3nn goes through Euler angles (about 1e-6 off near gimbal lock); ours does not."""
    from e3nn import o3 as e3o3

    rot = random_rotations(10, seed=5, improper=False)
    d = o3.wigner_d(lam, rot)
    eye = torch.eye(2 * lam + 1, dtype=torch.float64)
    assert torch.allclose(d @ d.transpose(-1, -2), eye.expand_as(d), atol=1e-12)
    reference = e3o3.wigner_D(lam, *e3o3.matrix_to_angles(rot))
    assert torch.allclose(d, reference, atol=1e-5)


def test_wigner_d_of_order_one_is_the_rotation_and_identity_is_identity():
    rot = random_rotations(6, seed=7)
    proper = rot * torch.sign(torch.linalg.det(rot))[:, None, None]
    assert torch.allclose(o3.wigner_d(1, rot), proper, atol=1e-14)
    for lam in range(5):
        assert torch.allclose(
            o3.wigner_d(lam, torch.eye(3, dtype=torch.float64)),
            torch.eye(2 * lam + 1, dtype=torch.float64),
            atol=1e-14,
        )


@pytest.mark.parametrize("lam", range(0, 7))
@pytest.mark.parametrize("sigma", [1, -1])
def test_characters_follow_the_weyl_formula_with_parity(lam, sigma, dtype):
    rot = random_rotations(30, seed=11).to(dtype)
    proper, det = o3.proper_part(rot)
    t = torch.arccos(((torch.diagonal(proper, dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1))
    weyl = torch.sin((2 * lam + 1) * t / 2) / torch.sin(t / 2)
    parity = torch.where(det > 0, torch.ones_like(det), sigma * (-1) ** lam * torch.ones_like(det))
    chi = o3.character(lam, sigma, rot)
    assert chi.shape == (30,) and chi.dtype == dtype
    assert torch.allclose(chi, parity * weyl, atol=1e-9 if dtype == torch.float64 else 1e-3)


def test_representation_applies_the_parity_of_inversion():
    inv = -torch.eye(3, dtype=torch.float64)
    for lam in range(4):
        for sigma in (1, -1):
            expected = sigma * (-1) ** lam * torch.eye(2 * lam + 1, dtype=torch.float64)
            assert torch.allclose(o3.representation(lam, sigma, inv), expected)


def test_bad_arguments_are_named():
    rot = torch.eye(3)
    with pytest.raises(ValueError, match=re.escape("lam must be a non-negative int, got -1")):
        o3.wigner_d(-1, rot)
    with pytest.raises(
        ValueError, match=re.escape("sigma must be +1 (polar) or -1 (axial), got 0")
    ):
        o3.character(1, 0, rot)
    with pytest.raises(
        ValueError, match=re.escape("rotations must have shape [..., 3, 3], got (3,)")
    ):
        o3.wigner_d(1, torch.ones(3))
    with pytest.raises(
        TypeError, match=re.escape("rotations must be a torch.Tensor [K, 3, 3], got list")
    ):
        o3.wigner_d(1, [[1, 0, 0]])
