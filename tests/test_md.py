"""ASE dynamics on the shipped PET models in every mode (reduced lengths)."""

import numpy as np
import pytest
from ase import units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from helpers import cu_cluster, cual_cell

from symmd import SymmetryCalculator, metrics, models, o3

pytestmark = pytest.mark.slow  # MD runs and scripts: the full tier


@pytest.fixture(scope="module")
def pets():
    return {
        name: models.load(models.shipped_model(name))
        for name in ("pet-emt-cual", "pet-emt-cu-cluster")
    }


@pytest.mark.parametrize("integrator", ["verlet", "langevin"])
@pytest.mark.parametrize("mode", ["none", "project", "average", "adaptive"])
@pytest.mark.parametrize("name", ["pet-emt-cual", "pet-emt-cu-cluster"])
def test_md_runs_100_steps_in_every_mode(pets, name, mode, integrator):
    periodic = name == "pet-emt-cual"
    atoms = cual_cell((1, 2, 2), rattle=0.02) if periodic else cu_cluster(13)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    calc = SymmetryCalculator(pets[name], symmetrize=mode, quadrature=1 if periodic else 2, seed=0)
    atoms.calc = calc
    if integrator == "verlet":
        dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    else:
        dyn = Langevin(
            atoms, 1.0 * units.fs, temperature_K=300, friction=0.02, rng=np.random.default_rng(0)
        )
    e0 = atoms.get_total_energy()
    dyn.run(100)
    assert calc.n_calls >= 100 and np.isfinite(atoms.positions).all()
    if integrator == "verlet":
        assert abs(atoms.get_total_energy() - e0) / len(atoms) < 2e-3  # eV/atom over 0.1 ps
    if mode in ("project", "average"):
        assert np.abs(atoms.get_forces().sum(0)).max() < 1e-4
    if mode == "average":
        assert calc.results["equivariance_error_forces"].shape == (len(atoms),)


@pytest.fixture(scope="module")
def pet_reference(pets):
    atoms = cual_cell(seed=3)
    q = o3.lebedev(11)
    u = models.evaluate_rotated(models.load(pets["pet-emt-cual"]), atoms, q, ("forces",))["forces"]
    return (
        atoms,
        metrics.average(u, q, "vector").numpy(),
        float((metrics.equivariance_error(u, q, "vector") ** 2).mean().sqrt()),
    )


@pytest.mark.heavy  # minutes-long check: outside CI's budget (README, Test)
def test_averaged_pet_forces_converge_to_the_degree_11_reference(pets, pet_reference):
    atoms, reference, raw_error = pet_reference
    distance = {}
    for degree in (3, 5, 7):
        copy = atoms.copy()
        copy.calc = SymmetryCalculator(
            pets["pet-emt-cual"], symmetrize="average", quadrature=degree
        )
        distance[degree] = np.sqrt(np.mean(np.sum((copy.get_forces() - reference) ** 2, axis=1)))
    assert distance[3] > distance[5] > distance[7]
    assert distance[5] * 10 < raw_error
