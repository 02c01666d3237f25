import re

import pytest
import torch
from helpers import random_rotations, tol

from symmd import o3


def test_rank2_blocks_transform_with_their_irreps(dtype):
    rot = random_rotations(8, seed=3).to(dtype)
    t = torch.randn(8, 3, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    rotated = rot @ t @ rot.transpose(-1, -2)
    before = o3.cartesian_to_spherical(t, "rank2")
    after = o3.cartesian_to_spherical(rotated, "rank2")
    assert set(before) == {(0, 1), (1, -1), (2, 1)}
    for (lam, sigma), block in before.items():
        expected = torch.einsum("kmn,kn->km", o3.representation(lam, sigma, rot), block)
        assert torch.allclose(after[(lam, sigma)], expected, atol=10 * tol(dtype))


def test_rank2_round_trip_norm_and_meaning(dtype):
    t = torch.randn(4, 3, 3, dtype=dtype, generator=torch.Generator().manual_seed(1))
    blocks = o3.cartesian_to_spherical(t, "rank2")
    assert torch.allclose(o3.spherical_to_cartesian(blocks, "rank2"), t, atol=tol(dtype))
    norm2 = sum((b * b).sum(-1) for b in blocks.values())
    assert torch.allclose(norm2, (t * t).sum((-1, -2)), atol=10 * tol(dtype))
    trace = torch.diagonal(t, dim1=-2, dim2=-1).sum(-1)
    assert torch.allclose(blocks[(0, 1)][:, 0].abs(), trace.abs() / 3**0.5, atol=tol(dtype))
    symmetric = o3.spherical_to_cartesian({(0, 1): blocks[(0, 1)], (2, 1): blocks[(2, 1)]}, "rank2")
    assert torch.allclose(symmetric, (t + t.transpose(-1, -2)) / 2, atol=tol(dtype))


def test_vectors_are_their_own_spherical_components():
    v = torch.randn(5, 3)
    blocks = o3.cartesian_to_spherical(v, "vector")
    assert list(blocks) == [(1, 1)] and torch.equal(blocks[(1, 1)], v)
    assert torch.equal(o3.spherical_to_cartesian(blocks, "vector"), v)


def test_cartesian_errors():
    with pytest.raises(
        ValueError, match=re.escape("kind must be 'vector' or 'rank2', got 'rank3'")
    ):
        o3.cartesian_to_spherical(torch.ones(3), "rank3")
    with pytest.raises(
        ValueError, match=re.escape("a rank-2 tensor must have shape [..., 3, 3], got (3,)")
    ):
        o3.cartesian_to_spherical(torch.ones(3), "rank2")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "blocks [(3, 1)] do not belong to a rank2; expected keys among [(0, 1), (1, -1), (2, 1)]"
        ),
    ):
        o3.spherical_to_cartesian({(3, 1): torch.ones(7)}, "rank2")
