"""Honest numbers: exact A against closed forms, one value per state, strict keywords."""

import csv
import math
import re

import ase
import numpy as np
import pytest
import torch
from helpers import cu_cluster, cual_cell
from toy_models import lab_frame_callable

from symmd import InstabilityWarning, Monitor, SymmetryCalculator, metrics, models, o3

# a traceless symmetric tensor: the energy d^T M d of the first pair is pure lambda = 2
M = torch.tensor([[0.3, 0.1, -0.2], [0.1, -0.5, 0.05], [-0.2, 0.05, 0.2]], dtype=torch.float64)


def quadrupole(positions, types, cell, pbc, system_index):
    """E = d^T M d with d = r_1 - r_0 of each structure (two atoms each)."""
    first = torch.nonzero(torch.diff(system_index, prepend=system_index[:1] - 1)).flatten()
    d = positions[first + 1] - positions[first]
    return {"energy": torch.einsum("bi,ij,bj->b", d, M.to(d.dtype), d)}


def dimer(d=(0.7, -1.1, 0.4)):
    return ase.Atoms("Cu2", positions=[[0.0, 0.0, 0.0], d])


def exact_errors(atoms):
    """Closed forms over O(3): A_E^2 = |d|^4 2 tr(M^2)/15 (traceless M);
    the back-rotated force 2 R^T M R d has zero twirl and mean square
    4 |d|^2 tr(M^2)/3."""
    d2 = float(np.sum((atoms.positions[1] - atoms.positions[0]) ** 2))
    trm2 = float(torch.trace(M @ M))
    return d2 * math.sqrt(2 * trm2 / 15), 2 * math.sqrt(d2 * trm2 / 3)


@pytest.mark.parametrize("degree", [4, 5, 7])
def test_average_mode_errors_are_exact_with_a_rule_of_twice_the_band_limit(degree):
    atoms = dimer()
    atoms.calc = SymmetryCalculator(quadrupole, symmetrize="average", quadrature=degree)
    a_e, a_f = exact_errors(atoms)
    assert atoms.get_potential_energy() == pytest.approx(0.0, abs=1e-13)
    res = atoms.calc.results
    assert res["equivariance_error_energy"] == pytest.approx(a_e, rel=1e-12)
    assert np.allclose(res["equivariance_error_forces"], a_f, rtol=1e-12)
    assert res["equivariance_error_exact_lambda"] == o3.quadrature(degree).degree // 2 >= 2


@pytest.mark.parametrize("degree", [2, 3])
def test_a_rule_below_twice_the_band_limit_averages_exactly_but_misjudges_a(degree):
    atoms = dimer()
    atoms.calc = SymmetryCalculator(quadrupole, symmetrize="average", quadrature=degree)
    a_e, _ = exact_errors(atoms)
    assert atoms.get_potential_energy() == pytest.approx(0.0, abs=1e-13)  # twirl exact (L >= 2)
    res = atoms.calc.results
    assert res["equivariance_error_exact_lambda"] < 2
    assert abs(res["equivariance_error_energy"] / a_e - 1) > 1e-3


def test_monitor_estimate_is_unbiased_for_the_closed_form():
    atoms = dimer()
    a_e, a_f = exact_errors(atoms)
    draws = [o3.random_o3(2, np.random.default_rng(seed)) for seed in range(400)]
    rot = torch.cat([q.rotations for q in draws])
    out = models.evaluate_rotated(models.load(quadrupole), atoms, rot, ("energy", "forces"))
    est_e, est_f = [], []
    for s, q in enumerate(draws):
        est_e.append(float(metrics.sample_error(out["energy"][2 * s : 2 * s + 2], q, "scalar")[0]))
        est_f.append(
            float(metrics.sample_error(out["forces"][2 * s : 2 * s + 2], q, "vector")[0][0])
        )
    for est, exact in ((est_e, a_e**2), (est_f, a_f**2)):
        se = np.std(est) / np.sqrt(len(est))
        assert abs(np.mean(est) - exact) < 4 * se
        assert se < 0.2 * exact  # the check has power


def test_monitor_reports_its_unbiased_estimate_in_average_mode():
    atoms = dimer()
    monitor = Monitor(every=1, seed=0)
    atoms.calc = SymmetryCalculator(quadrupole, symmetrize="average", quadrature=2, monitor=monitor)
    atoms.get_forces()
    row = monitor.history[0]
    assert row["a2_energy_se"] > 0  # an estimate, with its standard error
    assert atoms.calc.results["equivariance_error_energy"] == pytest.approx(
        math.sqrt(row["a2_energy"]), rel=1e-12
    )


@pytest.mark.slow  # the shipped PET on many structures: seconds
def test_energy_is_one_value_per_state_whatever_is_requested():
    model = models.shipped_model()
    atoms = cual_cell()
    atoms.calc = SymmetryCalculator(model)
    first = atoms.get_potential_energy()
    energies = atoms.get_potential_energies()
    assert atoms.get_potential_energy() == first
    fresh = atoms.copy()
    fresh.calc = SymmetryCalculator(model)
    assert fresh.get_potential_energies().sum() == pytest.approx(first, abs=1e-4)
    assert fresh.get_potential_energy() == first
    assert np.array_equal(fresh.get_potential_energies(), energies)


def test_none_mode_reports_the_antisymmetric_stress_project_removes_nothing_else():
    from toy_models import toy_metatomic_model

    atoms = cual_cell()
    toy = toy_metatomic_model(anisotropy=0.3)
    raw = models.evaluate_rotated(models.load(toy), atoms, torch.eye(3), ("stress",))["stress"][0]
    antisym = float(torch.linalg.norm((raw - raw.T) / 2))
    assert antisym > 1e-6
    for mode in ("none", "project"):
        atoms.calc = SymmetryCalculator(toy, symmetrize=mode)
        voigt = atoms.get_stress()
        assert atoms.calc.results["stress_antisymmetric"] == pytest.approx(antisym, rel=1e-10)
        sym = ((raw + raw.T) / 2).numpy()
        assert np.allclose(voigt[:3], np.diag(sym), atol=1e-12)
        assert np.allclose(voigt[3:], [sym[1, 2], sym[0, 2], sym[0, 1]], atol=1e-12)


def test_misspelled_keywords_raise_with_the_closest_valid_one():
    with pytest.raises(TypeError) as info:
        SymmetryCalculator(lab_frame_callable, symmetrise="average")
    assert str(info.value) == (
        "SymmetryCalculator got an unexpected keyword argument 'symmetrise'; "
        "did you mean 'symmetrize'?"
    )
    with pytest.raises(TypeError) as info:
        Monitor(evry=1)
    assert (
        str(info.value)
        == "Monitor got an unexpected keyword argument 'evry'; did you mean 'every'?"
    )
    calc = SymmetryCalculator(lab_frame_callable, label="run", directory=".")  # ASE's own
    assert calc.label == "run"


def test_oversized_rules_are_refused_unless_allowed():
    with pytest.raises(ValueError) as info:
        SymmetryCalculator(lab_frame_callable, symmetrize="average", quadrature=40)
    n = len(o3.quadrature(40))
    assert n == 590 * 41 * 2  # Lebedev order 41 (590 nodes) x 41 angles x inversion
    assert re.fullmatch(
        rf"the quadrature 'lebedev41x41\+inversion' has {n} rotated copies, more than "
        r"max_copies=5000 \(roughly \d+ s per step for 100 atoms on a CPU\); lower the "
        r"degree, or pass max_copies=None to allow it",
        str(info.value),
    )
    calc = SymmetryCalculator(lab_frame_callable, quadrature=40, max_copies=None)
    assert len(calc.quadrature) == n


def test_an_existing_log_is_kept_and_a_free_name_used(tmp_path):
    log = tmp_path / "md.csv"
    log.write_text("precious\n")
    monitor = Monitor(every=1, log=log, seed=0)
    atoms = cu_cluster(6)
    atoms.calc = SymmetryCalculator(lab_frame_callable, monitor=monitor)
    atoms.get_forces()
    assert log.read_text() == "precious\n"
    assert monitor.log == str(tmp_path / "md.1.csv")
    assert len(list(csv.DictReader(open(monitor.log)))) == 1
    again = Monitor(log=log, overwrite=True)
    SymmetryCalculator(lab_frame_callable, monitor=again)
    assert again.log == str(log) and log.read_text().startswith("step,")


def test_every_zero_keeps_the_physical_checks():
    monitor = Monitor(every=0, seed=0)
    atoms = cu_cluster(6)
    atoms.positions[1] = atoms.positions[0] + [0.3, 0.0, 0.0]  # a collision
    atoms.calc = SymmetryCalculator(lab_frame_callable, monitor=monitor)
    with pytest.warns(InstabilityWarning, match="is a collision"):
        atoms.get_forces()
    assert [e["metric"] for e in monitor.events] == ["min_distance"]
    assert "a2_forces" not in monitor.history[0]


def test_adaptive_with_raise_switches_first_and_stops_when_a_collision_persists():
    from symmd import InstabilityError

    monitor = Monitor(every=1, threshold=1e9, action="raise", seed=0)
    atoms = cu_cluster(6)
    atoms.positions[1] = atoms.positions[0] + [0.3, 0.0, 0.0]
    calc = SymmetryCalculator(lab_frame_callable, symmetrize="adaptive", monitor=monitor)
    atoms.calc = calc
    atoms.get_forces()  # first flag: switch, no stop
    assert calc.mode == "average"
    atoms.positions[2, 0] += 0.01
    with pytest.raises(InstabilityError) as info:
        atoms.get_forces()
    assert info.value.metric == "min_distance" and info.value.step == 1
    assert str(info.value).startswith("step 1: min_distance = 0.3 A is a collision")
