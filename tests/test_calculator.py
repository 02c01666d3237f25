import re

import numpy as np
import pytest
import torch
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from helpers import cu_cluster, cual_cell, random_rotations, rotated_copy
from toy_models import lab_frame_callable, toy_metatomic_model

from symmd import SymmetryCalculator, o3
from symmd.projection import net_force, net_torque


def compute(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    out = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        out["stress"] = atoms.get_stress(voigt=False)
    out.update({k: v for k, v in calc.results.items() if k.startswith("equivariance_error")})
    return out


def test_wrapping_an_equivariant_calculator_changes_nothing():
    atoms = cual_cell((1, 1, 2), rattle=0.05)
    raw = compute(SymmetryCalculator(EMT()), atoms)
    avg = compute(SymmetryCalculator(EMT(), symmetrize="average", quadrature=3), atoms)
    assert abs(raw["energy"] - avg["energy"]) < 1e-10
    assert np.allclose(raw["forces"], avg["forces"], atol=1e-10)
    assert np.allclose(raw["stress"], avg["stress"], atol=1e-12)
    assert avg["equivariance_error_energy"] < 1e-10
    assert (
        avg["equivariance_error_forces"].shape == (len(atoms),)
        and avg["equivariance_error_forces"].max() < 1e-10
    )
    assert avg["equivariance_error_stress"] < 1e-12


@pytest.mark.parametrize("degree", [2, 3, 5])
def test_average_of_a_band_limited_model_is_equivariant_and_equals_the_analytic_twirl(degree):
    """The toy energy is isotropic + anisotropy * v_x v_y / r^2 (lambda = 2):
    its twirl is exactly the same model with anisotropy = 0."""
    atoms = cual_cell((1, 1, 2), seed=5)
    calc = SymmetryCalculator(toy_metatomic_model(), symmetrize="average", quadrature=degree)
    avg = compute(calc, atoms)
    twirl = compute(SymmetryCalculator(toy_metatomic_model(anisotropy=0.0)), atoms)
    raw = compute(SymmetryCalculator(toy_metatomic_model()), atoms)
    assert np.abs(raw["forces"] - twirl["forces"]).max() > 1e-3
    assert abs(avg["energy"] - twirl["energy"]) < 1e-10
    assert np.allclose(avg["forces"], twirl["forces"], atol=1e-10)
    assert np.allclose(avg["stress"], twirl["stress"], atol=1e-10)
    for rot in random_rotations(3, seed=degree).numpy():
        moved = compute(calc, rotated_copy(atoms, rot))
        assert abs(moved["energy"] - avg["energy"]) < 1e-9
        assert np.allclose(moved["forces"], avg["forces"] @ rot.T, atol=1e-9)
        assert np.allclose(moved["stress"], rot @ avg["stress"] @ rot.T, atol=1e-9)


def test_average_of_a_non_periodic_callable_equals_its_twirl():
    """lab_frame_callable adds v_x v_y / r^2 (lambda 2) and v_z^3 (lambda 1, 3)
    terms, both with zero Haar average; degree 3 integrates them exactly."""
    atoms = cu_cluster(9)
    avg = compute(SymmetryCalculator(lab_frame_callable, symmetrize="average", quadrature=3), atoms)

    def isotropic(*args):
        return lab_frame_callable(*args, anisotropy=0.0)

    n = len(atoms)
    pos = torch.tensor(atoms.positions)
    i, j = torch.triu_indices(n, n, 1)
    v = pos[j] - pos[i]
    twirl_energy = float(
        isotropic(
            pos,
            torch.tensor(atoms.numbers),
            torch.zeros(1, 3, 3, dtype=torch.float64),
            torch.zeros(1, 3, dtype=torch.bool),
            torch.zeros(n, dtype=torch.long),
        )["energy"][0]
        - 0.01 * (v[:, 2] ** 3).sum()
    )
    assert abs(avg["energy"] - twirl_energy) < 1e-10
    for rot in random_rotations(2, seed=8).numpy():
        moved = compute(
            SymmetryCalculator(lab_frame_callable, symmetrize="average", quadrature=3),
            rotated_copy(atoms, rot),
        )
        assert np.allclose(moved["forces"], avg["forces"] @ rot.T, atol=1e-9)


def test_averaged_forces_are_minus_the_gradient_of_the_averaged_energy():
    atoms = cu_cluster(7)
    calc = SymmetryCalculator(lab_frame_callable, symmetrize="average", quadrature=2)
    forces = compute(calc, atoms)["forces"]
    h = 1e-5
    for i, a in [(0, 1), (4, 2)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[i, a] += sign * h
            energies.append(compute(calc, moved)["energy"])
        assert abs(-(energies[0] - energies[1]) / (2 * h) - forces[i, a]) < 1e-7


def test_project_zeroes_net_force_and_torque_and_keeps_energies():
    cluster = cu_cluster(11)
    calc = SymmetryCalculator(lab_frame_callable, symmetrize="project")
    raw = compute(SymmetryCalculator(lab_frame_callable), cluster)
    proj = compute(calc, cluster)
    assert np.linalg.norm(net_torque(cluster.positions, raw["forces"])) > 1e-3
    assert np.abs(net_force(proj["forces"])).max() < 1e-12
    assert np.abs(net_torque(cluster.positions, proj["forces"])).max() < 1e-12
    assert np.abs(net_torque(cluster.positions + 5.0, proj["forces"])).max() < 1e-11
    assert proj["energy"] == raw["energy"]
    # periodic: net force only, stress symmetric, per-atom energies sum to the energy
    bulk = cual_cell((1, 1, 2))
    bulk.calc = SymmetryCalculator(toy_metatomic_model(), symmetrize="project")
    forces = bulk.get_forces()
    assert np.abs(forces.sum(0)).max() < 1e-12
    assert abs(bulk.get_potential_energies().sum() - bulk.get_potential_energy()) < 1e-10
    stress = bulk.get_stress(voigt=False)
    assert np.allclose(stress, stress.T)


def test_project_is_the_minimal_norm_change():
    from symmd.projection import project_forces

    rng = np.random.default_rng(0)
    positions, forces = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    projected = project_forces(forces, positions, torque=True)
    # any other force field with zero net force and torque is farther away
    for _ in range(5):
        other = project_forces(projected + 0.1 * rng.normal(size=(6, 3)), positions, torque=True)
        assert np.linalg.norm(other - forces) >= np.linalg.norm(projected - forces) - 1e-12


def quadrupole_energy(positions, types, cell, pbc, system_index):
    """sum_i x_i^2 - y_i^2: invariant under D2, not under general rotations."""
    e = positions[:, 0] ** 2 - positions[:, 1] ** 2
    return {"energy": torch.zeros(cell.shape[0], dtype=e.dtype).index_add(0, system_index, e)}


def test_reorient_is_seeded_and_changes_orientation():
    def run(seed):
        calc = SymmetryCalculator(
            quadrupole_energy, symmetrize="average", quadrature=1, reorient=True, seed=seed
        )
        cluster = cu_cluster(6)
        energies = []
        for _ in range(2):
            calc.reset()
            energies.append(compute(calc, cluster)["energy"])
        return energies

    first, again, other = run(1), run(1), run(2)
    assert first == again and first != other and first[0] != first[1]
    # an invariant model gives the same average in every orientation
    atoms = cual_cell((1, 1, 2), seed=9)
    model = toy_metatomic_model(anisotropy=0.0)
    calc = SymmetryCalculator(model, symmetrize="average", quadrature=2, reorient=True, seed=0)
    assert (
        abs(compute(calc, atoms)["energy"] - compute(SymmetryCalculator(model), atoms)["energy"])
        < 1e-10
    )


def test_diagnostics_are_mirrored_into_atoms():
    atoms = cu_cluster(6)
    atoms.calc = SymmetryCalculator(
        lab_frame_callable, symmetrize="average", quadrature=2, mirror_to_atoms=True
    )
    atoms.get_forces()
    assert atoms.arrays["equivariance_error_forces"].shape == (6,)
    assert atoms.info["equivariance_error_energy"] > 1e-6


def test_calculator_errors():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "symmetrize must be one of ['none', 'project', 'average', 'average+project', 'adaptive'], got 'full'"
        ),
    ):
        SymmetryCalculator(EMT(), symmetrize="full")
    with pytest.raises(
        TypeError,
        match=re.escape(
            "quadrature must be a symmd.o3.Quadrature, an int degree or 'auto', got 'high'"
        ),
    ):
        SymmetryCalculator(EMT(), quadrature="high")
    with pytest.raises(
        ValueError, match=re.escape("the tolerance for forces must be a positive number, got 0")
    ):
        SymmetryCalculator(EMT(), quadrature="auto", tolerance=0)
    with pytest.raises(ValueError, match=re.escape("degree=200 is not supported")):
        SymmetryCalculator(EMT(), quadrature=200)
    atoms = cu_cluster(5)
    atoms.calc = SymmetryCalculator(lab_frame_callable)
    with pytest.raises(
        PropertyNotImplementedError,
        match=re.escape(
            "stress is only defined for fully periodic structures; this one has pbc=[False, False, False]"
        ),
    ):
        atoms.get_stress()


def test_quadrature_object_is_accepted():
    q = o3.point_group("T")
    calc = SymmetryCalculator(lab_frame_callable, symmetrize="average", quadrature=q)
    assert calc.quadrature is q


def direct_forces(positions, types, cell, pbc, system_index):
    """A non-conservative model: forces = -k r_i (equivariant) + a lab-frame constant."""
    lab = torch.tensor([0.2, -0.1, 0.05], dtype=positions.dtype)
    energy = torch.zeros(cell.shape[0], dtype=positions.dtype).index_add(
        0, system_index, 0.5 * (positions**2).sum(1)
    )
    return {"energy": energy.detach(), "forces": -positions + lab}


def test_non_conservative_forces_are_back_rotated_and_averaged():
    atoms = cu_cluster(6)
    calc = SymmetryCalculator(
        direct_forces, symmetrize="average", quadrature=1, non_conservative=True
    )
    avg = compute(calc, atoms)
    assert np.allclose(
        avg["forces"], -atoms.positions, atol=1e-12
    )  # the lab-frame part averages out
    assert np.allclose(
        avg["equivariance_error_forces"], np.linalg.norm([0.2, -0.1, 0.05]), atol=1e-12
    )
    raw = compute(SymmetryCalculator(direct_forces, non_conservative=True), atoms)
    assert np.allclose(raw["forces"], -atoms.positions + [0.2, -0.1, 0.05], atol=1e-12)


@pytest.mark.slow
def test_auto_quadrature_is_chosen_once_from_the_predicted_residual():
    """uniaxial-like toy: the point groups alias its lambda = 4 content; a
    loose tolerance takes a small rule, a strict one the degree-4 design."""
    from symmd.recommend import recommend_quadrature

    atoms = cual_cell((1, 1, 2), seed=5)
    model = toy_metatomic_model(uniaxial=0.2)
    strict = SymmetryCalculator(model, symmetrize="average", quadrature="auto", tolerance=1e-9)
    first = compute(strict, atoms)
    assert strict.recommendation.reached and strict.recommendation.degree == 4
    assert strict.quadrature.name == "so3design4x43+inversion"
    again = compute(strict, cual_cell((1, 1, 2), seed=6))  # decided once: no new probe
    assert strict.recommendation.degree == 4 and again["forces"].shape == (8, 3)
    # the averaged forces are those of the chosen rule
    ref = compute(SymmetryCalculator(model, symmetrize="average", quadrature=4), atoms)
    assert np.allclose(first["forces"], ref["forces"], atol=1e-12)
    loose = SymmetryCalculator(
        model, symmetrize="average", quadrature="auto", tolerance={"forces": 1.0, "stress": 1.0}
    )
    compute(loose, atoms)
    assert loose.recommendation.degree == 1 and set(loose.recommendation.tolerance) == {
        "forces",
        "stress",
    }
    expected = recommend_quadrature(model, atoms, 1e-9)
    assert expected.degree == strict.recommendation.degree
