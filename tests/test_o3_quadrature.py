import re

import numpy as np
import pytest
import torch
from helpers import random_rotations

from symmd import o3


def haar_integral_error(q, lam, sigma):
    """Largest entry of sum_k w_k D^beta(g_k) minus the Haar integral."""
    total = torch.einsum("k,kmn->mn", q.weights, o3.representation(lam, sigma, q.rotations))
    exact = 1.0 if (lam, sigma) == (0, 1) else 0.0
    return float((total - exact).abs().max())


def exact_to(q, degree):
    """sum_k w_k D^(lam,sigma)(g_k) is the Haar integral for all lam <= degree."""
    _, det = o3.proper_part(q.rotations)
    for lam, d in enumerate(o3.wigner_d_series(degree, q.rotations)):
        for parity in (torch.ones_like(det), det):  # sigma (-1)^lam = +1 or -1
            total = torch.einsum("k,kmn->mn", q.weights * parity, d)
            exact = 1.0 if lam == 0 and parity is not det else 0.0
            if float((total - exact).abs().max()) > 1e-12:
                return False
    return True


ALL_RULES = (
    [("lebedev", d) for d in range(1, 10)]
    + [("lebedev", d) for d in (12, 13)]
    + [("quadrature", d) for d in range(0, 10)]
    + [("so3_design", d) for d in o3.design_degrees()]
)


@pytest.mark.parametrize("builder,degree", ALL_RULES)
def test_rules_integrate_wigner_d_exactly_up_to_their_degree(builder, degree):
    q = getattr(o3, builder)(degree)
    assert q.degree == degree if builder != "quadrature" else q.degree >= degree
    assert exact_to(q, degree)


@pytest.mark.parametrize("degree", range(1, 10))
def test_lebedev_rules_fail_just_above_their_degree(degree):
    q = o3.lebedev(degree)
    errors = [haar_integral_error(q, degree + 1, sigma) for sigma in (1, -1)]
    assert max(errors) > 1e-3


@pytest.mark.parametrize(
    "name,degree,size", [("D2", 1, 4), ("T", 2, 12), ("O", 3, 24), ("I", 5, 60)]
)
def test_point_groups_have_their_degree(name, degree, size):
    q = o3.point_group(name)
    assert len(q) == 2 * size and len(o3.point_group(name, inversion=False)) == size
    assert q.degree == degree
    assert exact_to(q, degree)
    assert max(haar_integral_error(q, degree + 1, s) for s in (1, -1)) > 1e-3


@pytest.mark.parametrize("q", [o3.point_group("I"), o3.lebedev(6), o3.quadrature(3)], ids=str)
def test_reoriented_keeps_the_degree(q):
    r = random_rotations(1, seed=3, improper=False)[0]
    q2 = q.reoriented(r)
    assert q2.degree == q.degree and len(q2) == len(q)
    assert torch.allclose(q2.rotations, q.rotations @ r)
    assert exact_to(q2, q.degree)


def test_inversion_doubles_every_rule():
    for q1, q2 in [
        (o3.lebedev(4, inversion=False), o3.lebedev(4)),
        (o3.haar(5, seed=1, inversion=False), o3.haar(5, seed=1)),
        (o3.quadrature(3, inversion=False), o3.quadrature(3)),
    ]:
        assert len(q2) == 2 * len(q1)
        assert torch.equal(q2.rotations[len(q1) :], -q1.rotations)
        assert torch.allclose(q2.weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert not o3.lebedev(4, inversion=False).has_inversion and o3.lebedev(4).has_inversion


def test_lebedev_uses_degree_plus_one_in_plane_angles_and_positive_weights():
    from scipy.integrate import lebedev_rule

    for degree in range(1, 40):
        q = o3.lebedev(degree, inversion=False)
        order = int(re.match(r"lebedev(\d+)x", q.name).group(1))
        assert order >= degree and order not in (13, 25, 27)
        assert len(q) == lebedev_rule(order)[1].size * (degree + 1)
        assert bool((q.weights > 0).all())


@pytest.mark.parametrize("degree", o3.design_degrees())
def test_designs_are_positive_exact_to_their_degree_and_not_above(degree):
    for inversion in (False, True):
        q = o3.so3_design(degree, inversion=inversion)
        assert q.degree == degree and bool((q.weights > 0).all())
        assert abs(float(q.weights.sum()) - 1.0) < 1e-14
        assert q.has_inversion == inversion
        if inversion:  # both parities
            assert exact_to(q, degree)
        else:  # SO(3): sum_k w_k D^lam(R_k) = delta_lam0
            for lam, d in enumerate(o3.wigner_d_series(degree, q.rotations)):
                total = torch.einsum("k,kmn->mn", q.weights, d)
                assert float((total - float(lam == 0)).abs().max()) < 1e-12
        assert max(haar_integral_error(q, degree + 1, s) for s in (1, -1)) > 1e-3
        assert len(q) < len(o3.lebedev(degree, inversion=inversion))
    assert q.name == f"so3design{degree}x{len(q) // 2}+inversion"
    assert torch.equal(q.rotations[len(q) // 2 :], -q.rotations[: len(q) // 2])


@pytest.mark.slow  # runs the design script: seconds
def test_the_design_script_regenerates_the_shipped_rule():
    from symmd.o3._design import KNOWN, solve_design

    size, seed = KNOWN[4]
    rot, w = solve_design(4, size, seed=seed)
    q = o3.so3_design(4, inversion=False)
    assert len(q) == size
    assert np.allclose(rot, q.rotations.numpy(), atol=1e-8)
    assert np.allclose(w, q.weights.numpy(), atol=1e-8)


def test_unshipped_design_degree_is_rejected():
    message = (
        f"no SO(3) design of degree=5 is shipped; available degrees are "
        f"{list(o3.design_degrees())}; use symmd.o3.quadrature(5)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        o3.so3_design(5)


def test_quadrature_picks_the_smallest_rule_and_never_exceeds_metatomic():
    expected = {0: 2, 1: 8, 2: 24, 3: 48, 4: 86, 5: 120, 6: 232, 7: 344, 8: 488, 9: 668}
    for degree, size in expected.items():
        assert len(o3.quadrature(degree)) == size
    for degree in range(1, 20):
        ours = len(o3.quadrature(degree))
        assert ours < o3.metatomic_size(degree)
        assert ours <= len(o3.lebedev(degree))


def test_haar_is_seeded_and_random_rules_have_no_degree():
    a, b, c = o3.haar(7, seed=42), o3.haar(7, seed=42), o3.haar(7, seed=43)
    assert a.degree is None and len(a) == 14
    assert torch.equal(a.rotations, b.rotations)
    assert not torch.equal(a.rotations, c.rotations)


def test_to_device_keeps_everything():
    q = o3.quadrature(2).to("cpu")
    assert q.rotations.dtype == torch.float64 and q.degree == 2 and len(q) == 24


@pytest.mark.parametrize("degree", [-1, 132])
def test_impossible_degree_is_rejected(degree):
    message = f"degree={degree} is not supported: exact rules exist here for 0 <= degree <= 131"
    with pytest.raises(ValueError, match=re.escape(message)):
        o3.quadrature(degree)
    with pytest.raises(ValueError, match=re.escape(message)):
        o3.lebedev(degree)


def test_degree_must_be_an_int():
    with pytest.raises(TypeError, match="^degree must be an int, got float$"):
        o3.quadrature(2.5)


def test_unknown_point_group_is_rejected():
    with pytest.raises(
        ValueError,
        match=re.escape("point group 'X' is not supported; use one of ['D2', 'I', 'O', 'T']"),
    ):
        o3.point_group("X")


def test_non_orthogonal_rotations_are_rejected():
    rot = torch.eye(3, dtype=torch.float64)[None].repeat(2, 1, 1)
    rot[1, 0, 0] = 1.1
    with pytest.raises(
        ValueError,
        match=r"^rotations must be orthogonal 3x3 matrices \(R R\^T = I\); the largest deviation is 0.21;",
    ):
        o3.Quadrature(rot, torch.tensor([0.5, 0.5]), None, "bad")
    with pytest.raises(ValueError, match=r"^rotation must be orthogonal"):
        o3.quadrature(1).reoriented(2 * torch.eye(3))


def test_quadrature_shapes_and_weights_are_checked():
    eye = torch.eye(3, dtype=torch.float64)[None]
    with pytest.raises(
        ValueError, match=re.escape("rotations must have shape [K, 3, 3] with K >= 1, got (3, 3)")
    ):
        o3.Quadrature(eye[0], torch.ones(1), None, "bad")
    with pytest.raises(
        ValueError,
        match=re.escape("weights must have shape [K] = [1] to match the rotations, got (2,)"),
    ):
        o3.Quadrature(eye, torch.ones(2) / 2, None, "bad")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "weights must be finite and sum to 1, got sum 2.0; normalize them (weights / weights.sum())"
        ),
    ):
        o3.Quadrature(eye, 2 * torch.ones(1), None, "bad")
    with pytest.raises(
        ValueError, match=re.escape("degree must be a non-negative int or None, got -2")
    ):
        o3.Quadrature(eye, torch.ones(1), -2, "bad")


def test_builders_are_cached_but_return_fresh_tensors():
    a, b = o3.lebedev(5), o3.lebedev(5)
    a.rotations.zero_()
    assert not torch.equal(b.rotations, a.rotations)
    assert np.isclose(float(b.weights.sum()), 1.0)
