import re

import pytest
import torch
from helpers import cu_cluster, cual_cell
from toy_models import toy_metatomic_model

from symmd import metrics, models, o3
from symmd.metrics import aliasing, predict_residuals
from symmd.recommend import CANDIDATE_DEGREES, recommend_quadrature


def uniaxial(positions, types, cell, pbc, system_index, a=0.3):
    """Cluster pair energy exp(-r) (1 + a (v_z / r)^4): lambda = 0, 2, 4 with
    parts the point groups D2, T and O leave invariant (they alias)."""
    n = positions.shape[0]
    i, j = torch.triu_indices(n, n, 1)
    same = system_index[i] == system_index[j]
    v = positions[j[same]] - positions[i[same]]
    r = v.norm(dim=-1)
    e = torch.exp(-r) * (1 + a * (v[:, 2] / r) ** 4)
    return {
        "energy": torch.zeros(cell.shape[0], dtype=positions.dtype).index_add(
            0, system_index[i[same]], e
        )
    }


def twirl_and_rule_average(model, atoms, degree, prop="forces", kind="vector"):
    q = o3.quadrature(degree)
    u = models.evaluate_rotated(models.load(model), atoms, q, (prop,))[prop]
    return metrics.average(u, q, kind)


@pytest.mark.parametrize("degree", [0, 1, 2, 3, 5, 6])
def test_aliasing_vanishes_exactly_up_to_the_degree(degree):
    q = o3.quadrature(degree)
    for (lam, sigma), s in aliasing(q, degree + 2).items():
        if (lam, sigma) == (0, 1):
            assert torch.allclose(s, torch.ones(1, 1, dtype=torch.float64), atol=1e-13)
        elif lam <= degree:
            assert s.abs().max() < 1e-12, (lam, sigma)
    # the rule is exact to its degree and no further: some sector above aliases
    assert (
        max(float(s.abs().max()) for (lam, _), s in aliasing(q, degree + 3).items() if lam > degree)
        > 1e-3
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "prop, kind", [("forces", "vector"), ("energy", "scalar"), ("stress", "rank2")]
)
def test_predicted_residual_is_exact_for_a_band_limited_model(prop, kind):
    """The energies have lambda <= 4 with a fixed lab-frame index, so z(g)
    stops at lambda = 4 (energy, forces) or 6 (stress: times the
    back-transform's 1 x 1): a degree-14 probe measures every coefficient
    exactly, and the prediction is the residual of each rule against the
    exact twirl."""
    if prop == "stress":
        model, atoms = toy_metatomic_model(uniaxial=0.2), cual_cell((1, 1, 2), seed=2)
    else:
        model, atoms = uniaxial, cu_cluster(7, seed=2)
    probe = o3.lebedev(14)
    u = models.evaluate_rotated(models.load(model), atoms, probe, (prop,))[prop]
    twirl = metrics.average(u, probe, kind)
    predicted = predict_residuals(u, probe, kind, CANDIDATE_DEGREES)
    for degree in CANDIDATE_DEGREES:
        diff = twirl_and_rule_average(model, atoms, degree, prop, kind) - twirl
        actual = (
            diff.pow(2)
            .sum(dim=tuple(range(diff.ndim - (kind != "scalar") - (kind == "rank2"), diff.ndim)))
            .sqrt()
            if kind != "scalar"
            else diff.abs()
        )
        assert torch.allclose(predicted[degree], actual, atol=1e-11), degree
    assert max(float(predicted[d].max()) for d in (1, 2, 3)) > 1e-5  # point groups alias
    assert float(predicted[7 if kind == "rank2" else 5].max()) < 1e-11  # exact beyond the content


@pytest.mark.slow  # many orientations of the probe: seconds
def test_reoriented_prediction_is_the_rms_over_orientations():
    """E_R ||r_{QR}||^2 is a polynomial of degree 8 in R: its mean over the
    proper half of a degree-8 rule is exact."""
    model, atoms = uniaxial, cu_cluster(6, seed=3)
    probe = o3.lebedev(12)
    u = models.evaluate_rotated(models.load(model), atoms, probe, ("forces",))["forces"]
    twirl = metrics.average(u, probe, "vector")
    predicted = predict_residuals(u, probe, "vector", [1, 2], reorient=True)
    fixed = predict_residuals(u, probe, "vector", [1, 2])
    assert float(predicted[1].min()) > 1e-4 and not torch.allclose(
        predicted[1], fixed[1], rtol=1e-3
    )
    orientations = o3.lebedev(8, inversion=False)
    for degree in (1, 2):
        q = o3.quadrature(degree)
        rot = torch.einsum("kab,rbc->rkac", q.rotations, orientations.rotations).reshape(-1, 3, 3)
        out = models.evaluate_rotated(models.load(model), atoms, rot, ("forces",))[
            "forces"
        ]  # [R K, N, 3]
        z = torch.einsum(
            "rkni,rkij->rknj",
            out.reshape(len(orientations), len(q), -1, 3),
            rot.reshape(len(orientations), len(q), 3, 3),
        )
        averages = torch.einsum("k,rknj->rnj", q.weights, z)
        mean_sq = torch.einsum("r,rn->n", orientations.weights, ((averages - twirl) ** 2).sum(-1))
        assert torch.allclose(predicted[degree], mean_sq.sqrt(), atol=1e-11)


@pytest.fixture(scope="module")
def pet_errors():
    """Measured RMS force residual of every candidate rule against the
    degree-11 twirl, shipped periodic PET, 16-atom cell."""
    model = models.load(models.shipped_model("pet-emt-cual"))
    atoms = cual_cell((1, 2, 2), seed=4)
    reference = o3.lebedev(11)
    ref = metrics.average(
        models.evaluate_rotated(models.load(model), atoms, reference, ("forces",))["forces"],
        reference,
        "vector",
    )
    measured = {}
    for degree in CANDIDATE_DEGREES[:7]:
        avg = twirl_and_rule_average(model, atoms, degree)
        measured[degree] = float(((avg - ref) ** 2).sum(-1).mean().sqrt())
    return model, atoms, measured


@pytest.mark.heavy  # minutes-long check: outside CI's budget (README, Test)
@pytest.mark.slow
@pytest.mark.parametrize("tolerance", [1e-3, 1e-4, 1e-5])
def test_recommended_degree_on_the_shipped_pet_is_the_smallest_sufficient(pet_errors, tolerance):
    model, atoms, measured = pet_errors
    rec = recommend_quadrature(model, atoms, tolerance)
    assert rec.reached and rec.quadrature.name == o3.quadrature(rec.degree).name
    degrees = list(measured)
    needed = next(d for d in degrees if measured[d] <= tolerance)
    # exactly the smallest rule that is enough, and it is enough
    assert rec.degree == needed and measured[rec.degree] <= tolerance, (rec, measured)
    # the prediction it acted on is close to what the rule really does
    ratio = rec.predicted["forces"][rec.degree] / measured[rec.degree]
    assert 0.5 < ratio < 2.5, (rec, measured)


def test_unreachable_tolerance_warns_and_returns_the_best_rule():
    model, atoms = toy_metatomic_model(), cual_cell((1, 1, 1), seed=0)
    with pytest.warns(UserWarning, match="no quadrature meets the tolerance"):
        rec = recommend_quadrature(model, atoms, 1e-30, candidates=(1, 2), probes=(5,))
    assert not rec.reached and rec.degree == 2 and rec.probe_copies == len(o3.lebedev(5))


def test_recommend_errors():
    model, atoms = toy_metatomic_model(), cual_cell((1, 1, 1))
    with pytest.raises(
        ValueError, match=re.escape("the tolerance for forces must be a positive number, got -1")
    ):
        recommend_quadrature(model, atoms, -1)
    with pytest.raises(
        ValueError,
        match=re.escape("tolerance is defined for ['energy', 'forces', 'stress'], got 'dipole'"),
    ):
        recommend_quadrature(model, atoms, {"dipole": 1e-3})
    with pytest.raises(ValueError, match=re.escape("probes must be integer degrees >= 2, got [1]")):
        recommend_quadrature(model, atoms, 1e-3, probes=[1])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "the probe rule must have a degree (random samples cannot resolve the spectrum)"
        ),
    ):
        predict_residuals(torch.zeros(4, 3), o3.haar(2, seed=0), "vector", (1,))
