import re

import pytest
import torch

from symmd import metrics, o3

Q6 = o3.quadrature(6)


def rotate_rows(x, rot):
    """x [..., 3] rotated by every R_k: [K, ..., 3] = x R_k^T."""
    return torch.einsum("...j,kij->k...i", x, rot)


def only_sector(spectrum, sector, value, atol=1e-12):
    for key, b in spectrum.items():
        expected = value if key == sector else torch.zeros_like(b)
        assert torch.allclose(
            b, torch.as_tensor(expected, dtype=torch.float64).expand_as(b), atol=atol
        ), key


@pytest.mark.parametrize("q", [o3.quadrature(2), o3.lebedev(3), Q6], ids=lambda q: q.name)
def test_constant_lab_frame_vector(q):
    v = torch.tensor([0.3, -1.2, 0.5], dtype=torch.float64)
    u = v.expand(len(q), 3)
    assert torch.allclose(
        metrics.average(u, q, "vector"), torch.zeros(3, dtype=torch.float64), atol=1e-14
    )
    assert torch.allclose(metrics.equivariance_error(u, q, "vector"), v.norm(), atol=1e-14)
    spectrum = metrics.character_spectrum(u, q, max_lambda=1, kind="vector")
    only_sector(spectrum, (0, 1), v.norm() ** 2)


def test_x_coordinate_of_atom_zero():
    r0 = torch.tensor([0.7, 0.2, -1.1], dtype=torch.float64)
    u = rotate_rows(r0, Q6.rotations)[:, 0]
    assert abs(float(metrics.average(u, Q6, "scalar"))) < 1e-14
    a = metrics.equivariance_error(u, Q6, "scalar")
    assert a.shape == () and torch.allclose(a**2, r0.norm() ** 2 / 3, atol=1e-14)
    only_sector(metrics.character_spectrum(u, Q6, max_lambda=3), (1, 1), r0.norm() ** 2 / 3)


@pytest.mark.parametrize(
    "lam,poly,weight",
    [
        (0, lambda x, y, z: torch.ones_like(x), 1.0),
        (1, lambda x, y, z: x, 1 / 3),
        (2, lambda x, y, z: x * y, 1 / 15),
        (3, lambda x, y, z: x * y * z, 1 / 105),
    ],
)
def test_polynomials_of_a_rotated_unit_vector_land_in_their_sector(lam, poly, weight):
    n = torch.tensor([1.0, 2.0, -2.0], dtype=torch.float64) / 3
    x, y, z = rotate_rows(n, Q6.rotations).unbind(-1)
    spectrum = metrics.character_spectrum(poly(x, y, z), Q6, max_lambda=3)
    only_sector(spectrum, (lam, 1), weight)


def test_pseudoscalar_and_axial_vector_land_in_sigma_minus():
    rot = Q6.rotations
    det = torch.linalg.det(rot)
    pseudo = 2.0 * det
    only_sector(metrics.character_spectrum(pseudo, Q6, max_lambda=3), (0, -1), 4.0)
    n = torch.tensor([0.0, 0.6, 0.8], dtype=torch.float64)
    axial = det * rotate_rows(n, rot)[:, 2]
    only_sector(metrics.character_spectrum(axial, Q6, max_lambda=3), (1, -1), 1 / 3)


def test_parseval_for_a_band_limited_response():
    gen = torch.Generator().manual_seed(0)
    coeffs = torch.randn(4, 4, 4, 2, dtype=torch.float64, generator=gen)
    n = torch.tensor([0.48, 0.6, 0.64], dtype=torch.float64)
    x, y, z = rotate_rows(n, Q6.rotations).unbind(-1)
    det = torch.linalg.det(Q6.rotations)
    u = torch.zeros(len(Q6), 2, dtype=torch.float64)  # two samples
    for i in range(4):
        for j in range(4 - i):
            for k in range(4 - i - j):  # total degree <= 3
                u += (x**i * y**j * z**k)[:, None] * (
                    coeffs[i, j, k] * torch.stack([torch.ones_like(det), det], 1)
                )
    spectrum = metrics.character_spectrum(u, Q6, max_lambda=3)
    total = sum(spectrum.values())
    assert total.shape == (2,)
    assert torch.allclose(total, torch.einsum("k,kn->n", Q6.weights, u * u), rtol=1e-12, atol=0)
    assert float(spectrum[(0, -1)][0]) < 1e-20 and float(spectrum[(0, -1)][1]) > 1e-3


def test_single_sum_equals_double_sum_with_characters():
    q = o3.quadrature(4)
    u = torch.randn(len(q), 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    spectrum = metrics.character_spectrum(u, q, max_lambda=2, kind="vector")
    relative = q.rotations.transpose(-1, -2)[:, None] @ q.rotations[None]  # g_k^-1 g_k'
    gram = torch.einsum("knc,lnc->kln", u, u)
    for (lam, sigma), b in spectrum.items():
        chi = o3.character(lam, sigma, relative)
        double = (2 * lam + 1) * torch.einsum("k,l,kl,kln->n", q.weights, q.weights, chi, gram)
        assert torch.allclose(b, double, rtol=1e-10, atol=1e-13)


def test_equivariant_forces_and_stress_back_transform_to_constants(dtype):
    q = o3.quadrature(3)
    rot = q.rotations
    gen = torch.Generator().manual_seed(3)
    forces = torch.randn(4, 3, dtype=torch.float64, generator=gen)
    stress = torch.randn(3, 3, dtype=torch.float64, generator=gen)
    u_f = rotate_rows(forces, rot).to(dtype)
    u_s = (rot @ stress @ rot.transpose(-1, -2)).to(dtype)
    z_f = metrics.back_transform(u_f, q, "vector")
    assert z_f.dtype == torch.float64 and z_f.shape == (len(q), 4, 3)
    atol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(z_f, forces.expand_as(z_f), atol=atol)
    assert torch.allclose(metrics.average(u_s, q, "rank2"), stress, atol=atol)
    err = metrics.equivariance_error(u_f, q, "vector")
    assert err.shape == (4,) and float(err.max()) < 10 * atol
    assert float(metrics.equivariance_error(u_s, q, "rank2")) < 10 * atol
    spectrum = metrics.character_spectrum(u_f, q, max_lambda=1, kind="vector")
    assert torch.allclose(spectrum[(1, 1)], (forces**2).sum(-1), atol=10 * atol)


def test_haar_rules_give_monte_carlo_spectra_without_a_degree_check():
    q = o3.haar(50, seed=0)
    u = torch.ones(len(q), dtype=torch.float64)
    assert torch.allclose(
        metrics.character_spectrum(u, q, max_lambda=4)[(0, 1)],
        torch.tensor(1.0, dtype=torch.float64),
    )


def test_metric_errors_name_the_problem():
    q = o3.quadrature(2)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"u must be stacked along axis 0 with one slice per rotation: expected shape [{len(q)}, ...], got (3, 3)"
        ),
    ):
        metrics.average(torch.ones(3, 3), q, "vector")
    with pytest.raises(
        ValueError, match=re.escape("a vector response must have shape [K, ...], 3, got (24, 2)")
    ):
        metrics.average(torch.ones(len(q), 2), q, "vector")
    with pytest.raises(
        ValueError,
        match=re.escape("kind must be one of ['scalar', 'vector', 'rank2'], got 'tensor'"),
    ):
        metrics.average(torch.ones(len(q)), q, "tensor")
    with pytest.raises(TypeError, match=re.escape("q must be a symmd.o3.Quadrature, got Tensor")):
        metrics.average(torch.ones(len(q)), q.rotations, "scalar")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "the quadrature 'T+inversion' has degree 2, which cannot resolve the spectrum up to max_lambda=2 (needs degree >= 4); use symmd.o3.quadrature(4) or lower max_lambda"
        ),
    ):
        metrics.character_spectrum(torch.ones(len(q)), q, max_lambda=2)
    proper = o3.point_group("I", inversion=False)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "the quadrature 'I' has no improper elements, so it cannot separate the parities sigma = +1 and -1; build it with inversion=True"
        ),
    ):
        metrics.character_spectrum(torch.ones(len(proper)), proper, max_lambda=2)
