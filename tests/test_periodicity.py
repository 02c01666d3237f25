"""Mixed periodicity: slabs, wires and molecules in a vacuum box.

ASE keeps a cell vector along a non-periodic direction (the vacuum box of
``fcc111(..., vacuum=10)`` or ``atoms.center(vacuum=5)``); metatomic requires it
to be zero. symmd zeroes it for the model, as metatomic-ase's calculator does,
so "none" must agree with metatomic-ase, the box size must not matter in any
mode, and the O(3) average must stay the exact twirl.
"""

import re

import ase.build
import numpy as np
import pytest
import torch
from ase.calculators.calculator import PropertyNotImplementedError
from helpers import cu_cluster, cual_cell, random_rotations, rotated_copy
from toy_models import toy_metatomic_model

from symmd import SymmetryCalculator, models, o3
from symmd.diagnose import diagnose
from symmd.models import as_structures, shipped_model


def slab():
    """Cu/Al fcc(111) slab, periodic in-plane, 10 A of vacuum each side."""
    atoms = ase.build.fcc111("Cu", (2, 2, 3), vacuum=10)
    atoms.numbers[[1, 5, 8]] = 13
    atoms.rattle(0.05, seed=1)
    return atoms


def boxed_cluster():
    """A Cu/Al cluster centred in a 5 A vacuum box, pbc False."""
    atoms = cu_cluster(13)
    atoms.numbers[[2, 7]] = 13
    atoms.center(vacuum=5)
    return atoms


def wire():
    """A Cu/Al rod periodic along c, boxed in a and b."""
    atoms = cual_cell((1, 1, 3), seed=2, rattle=0.05)
    atoms.pbc = [False, False, True]
    atoms.center(vacuum=5, axis=(0, 1))
    return atoms


STRUCTURES = {"slab": slab, "boxed_cluster": boxed_cluster, "wire": wire}


def compute(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy(), atoms.get_forces()


def test_the_structures_have_a_non_zero_cell_vector_along_a_non_periodic_direction():
    for make in STRUCTURES.values():
        atoms = make()
        cell = atoms.cell.array
        assert not atoms.pbc.all()
        assert np.linalg.norm(cell[~atoms.pbc], axis=1).min() > 9.0
        zeroed = as_structures(atoms).cell[0].numpy()
        assert np.array_equal(zeroed[~atoms.pbc], np.zeros(((~atoms.pbc).sum(), 3)))
        assert np.array_equal(zeroed[atoms.pbc], cell[atoms.pbc])


@pytest.mark.slow  # the shipped PET on many structures: seconds
@pytest.mark.parametrize("name", list(STRUCTURES))
@pytest.mark.parametrize("model", ["toy", "pet-emt-cual"])
def test_none_matches_metatomic_ase(name, model):
    from metatomic_ase import MetatomicCalculator

    atoms = STRUCTURES[name]()
    net = toy_metatomic_model() if model == "toy" else shipped_model(model)
    energy, forces = compute(SymmetryCalculator(net), atoms)
    ref_energy, ref_forces = compute(MetatomicCalculator(net), atoms)
    # float64 toy: round-off; float32 PET: float32 round-off of the scale
    atol = 1e-10 if model == "toy" else 2e-5 * max(1.0, abs(ref_energy))
    assert abs(energy - ref_energy) < atol
    atol = 1e-10 if model == "toy" else 2e-5 * max(1.0, np.abs(ref_forces).max())
    assert np.allclose(forces, ref_forces, atol=atol, rtol=0)
    assert np.abs(ref_forces).max() > 1e-3  # not a trivial comparison


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["none", "project", "average"])
@pytest.mark.parametrize("name", list(STRUCTURES))
def test_the_vacuum_cell_vector_is_not_used_in_any_mode(name, mode):
    atoms = STRUCTURES[name]()
    other = atoms.copy()
    cell = other.cell.array.copy()
    cell[~other.pbc] = 1.7 * cell[~other.pbc] + 0.3 * np.roll(cell[~other.pbc], 1, axis=1)
    other.set_cell(cell, scale_atoms=False)
    # one fresh calculator each: TorchScript's profiling executor changes the
    # float32 round-off between the first calls of one model object
    energy, forces = compute(SymmetryCalculator(shipped_model(), symmetrize=mode), atoms)
    energy2, forces2 = compute(SymmetryCalculator(shipped_model(), symmetrize=mode), other)
    assert energy == energy2
    assert np.array_equal(forces, forces2)


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_average_is_the_exact_twirl_and_equivariant(name):
    """The toy's lab-frame term has lambda = 2: its twirl is the toy without it."""
    atoms = STRUCTURES[name]()
    calc = SymmetryCalculator(toy_metatomic_model(), symmetrize="average", quadrature=3)
    energy, forces = compute(calc, atoms)
    twirl_energy, twirl_forces = compute(
        SymmetryCalculator(toy_metatomic_model(anisotropy=0.0)), atoms
    )
    raw_energy, raw_forces = compute(SymmetryCalculator(toy_metatomic_model()), atoms)
    assert np.abs(raw_forces - twirl_forces).max() > 1e-4
    assert abs(energy - twirl_energy) < 1e-10
    assert np.allclose(forces, twirl_forces, atol=1e-10, rtol=0)
    for rot in random_rotations(2, seed=4).numpy():
        moved_energy, moved_forces = compute(calc, rotated_copy(atoms, rot))
        assert abs(moved_energy - energy) < 1e-9
        assert np.allclose(moved_forces, forces @ rot.T, atol=1e-9, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STRUCTURES))
def test_pet_average_is_the_mean_of_back_rotated_metatomic_ase_results(name):
    """Peer oracle: the twirl over the group T x {1, -1}, evaluated copy by copy
    with metatomic-ase; and exact equivariance under an element of that group."""
    from metatomic_ase import MetatomicCalculator

    atoms = STRUCTURES[name]()
    q = o3.point_group("T")
    calc = SymmetryCalculator(shipped_model(), symmetrize="average", quadrature=q)
    energy, forces = compute(calc, atoms)
    peer = MetatomicCalculator(shipped_model())
    ref_energy, ref_forces = 0.0, np.zeros_like(forces)
    for rot, w in zip(q.rotations.numpy(), q.weights.numpy()):
        e, f = compute(peer, rotated_copy(atoms, rot))
        ref_energy += w * e
        ref_forces += w * f @ rot
    scale = max(1.0, np.abs(ref_forces).max())
    assert abs(energy - ref_energy) < 2e-5 * max(1.0, abs(ref_energy))
    assert np.allclose(forces, ref_forces, atol=2e-5 * scale, rtol=0)
    h = q.rotations[5].numpy()
    moved_energy, moved_forces = compute(calc, rotated_copy(atoms, h))
    assert abs(moved_energy - energy) < 2e-5 * max(1.0, abs(energy))
    assert np.allclose(moved_forces, forces @ h.T, atol=2e-5 * scale, rtol=0)


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_project_removes_the_torque_only_without_any_periodic_direction(name):
    """The toy is conservative (no net force to remove) but not rotation
    invariant: its forces carry a net torque, which "project" removes only when
    no direction is periodic (a slab or a wire may feel a torque)."""
    atoms = STRUCTURES[name]()
    _, forces = compute(SymmetryCalculator(toy_metatomic_model(), symmetrize="project"), atoms)
    _, raw = compute(SymmetryCalculator(toy_metatomic_model()), atoms)

    def torque(f):
        return np.cross(atoms.positions - atoms.positions.mean(0), f).sum(0)

    assert np.abs(forces.sum(0)).max() < 1e-12
    assert np.abs(torque(raw)).max() > 1e-3
    if atoms.pbc.any():
        assert np.allclose(forces, raw, atol=1e-12, rtol=0)
    else:
        assert np.abs(torque(forces)).max() < 1e-10


def test_stress_is_refused_where_it_is_undefined():
    atoms = slab()
    message = (
        "stress is only defined for fully periodic structures; structures [0] "
        "are not periodic in all three directions"
    )
    adapter = models.load(shipped_model())
    with pytest.raises(PropertyNotImplementedError, match=re.escape(message)):
        models.evaluate_rotated(adapter, atoms, torch.eye(3), ("energy", "stress"))
    atoms.calc = SymmetryCalculator(shipped_model())
    with pytest.raises(PropertyNotImplementedError, match="^stress is only defined for fully"):
        atoms.get_stress()


def test_invalid_cells_are_still_refused():
    atoms = slab()
    atoms.pbc = [True, True, True]
    atoms.cell[2] = 0.0
    message = (
        "structure 0 is periodic along cell vector 2 but that vector is zero; "
        "set atoms.cell or atoms.pbc"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        as_structures(atoms)
    atoms = slab()
    atoms.cell[1] = 2 * atoms.cell[0]
    message = (
        "structure 0 has linearly dependent periodic cell vectors "
        f"{atoms.cell.array[:2].tolist()} (pbc=[True, True, False]); fix atoms.cell"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        as_structures(atoms)


@pytest.mark.slow  # the shipped PET on many structures: seconds
def test_diagnose_accepts_a_slab():
    result = diagnose(shipped_model(), [slab(), boxed_cluster()], quadrature=2, max_lambda=1)
    data = result.to_dict()["properties"]
    assert "stress" not in data
    assert len(data["forces"]["error"]) == 2
    assert all(e > 0 for e in data["forces"]["error"])
