import re

import ase.build
import numpy as np
import pytest
import spglib
from ase import Atoms
from ase.calculators.emt import EMT
from ase.spacegroup.symmetrize import (
    prep_symmetry,
    refine_symmetry,
    symmetrize_rank1,
    symmetrize_rank2,
)

from symmd import SymmetryCalculator, models
from symmd.spacegroup import SpaceGroupProjector


def symmetric_cell(kind, seed=0):
    """A rattled cell symmetrized back to its space group (non-equilibrium lattice)."""
    if kind == "fcc":
        atoms = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True)
    elif kind == "L12":
        atoms = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True)
        atoms.numbers[0] = 13
    elif kind == "hcp":
        atoms = ase.build.bulk("Al", "hcp", a=2.9, c=4.6)
    elif kind == "P4mm":  # a free Wyckoff coordinate: symmetric but non-zero forces
        atoms = Atoms(
            "CuAl", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.37]], cell=[3.0, 3.0, 3.6], pbc=True
        )
    else:
        raise ValueError(kind)
    atoms.rattle(1e-3, seed=seed)
    refine_symmetry(atoms, symprec=1e-2)
    return atoms


def spacegroup(atoms, symprec=1e-5):
    return spglib.get_spacegroup(
        (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers), symprec=symprec
    )


def obeys_group(projector, atoms, forces, stress=None):
    """Largest violation of F_{g(i)} = R_g F_i and sigma = R_g sigma R_g^T."""
    rot = projector.cartesian_rotations(atoms)
    perms = projector.permutations
    err = float(np.abs(forces[perms] - np.einsum("nj,gkj->gnk", forces, rot)).max())
    if stress is not None:
        err = max(err, float(np.abs(rot @ stress @ rot.transpose(0, 2, 1) - stress).max()))
    return err


@pytest.mark.parametrize("kind", ["fcc", "L12", "hcp", "P4mm"])
def test_emt_outputs_on_a_symmetric_structure_are_unchanged(kind):
    atoms = symmetric_cell(kind) * (1, 1, 2)  # a supercell: pure translations too
    atoms.calc = EMT()
    raw = {
        "forces": atoms.get_forces(),
        "stress": atoms.get_stress(voigt=False),
        "energies": atoms.get_potential_energies(),
    }
    if kind == "P4mm":
        assert np.abs(raw["forces"][:, 2]).max() > 0.1  # a non-trivial check
    projected = SpaceGroupProjector().project(atoms, raw)
    for key in raw:
        assert np.allclose(projected[key], raw[key], atol=1e-12, rtol=0), key


@pytest.mark.parametrize("kind", ["fcc", "L12", "hcp", "P4mm"])
def test_projection_matches_ase_fix_symmetry_on_random_outputs(kind):
    atoms = symmetric_cell(kind, seed=1) * (2, 1, 1)
    rng = np.random.default_rng(0)
    forces, stress = rng.normal(size=(len(atoms), 3)), rng.normal(size=(3, 3))
    stress = stress + stress.T
    energies = rng.normal(size=len(atoms))
    projector = SpaceGroupProjector()
    out = projector.project(atoms, {"forces": forces, "stress": stress, "energies": energies})
    rot, trans, symm_map = prep_symmetry(atoms, symprec=1e-5)
    lattice = atoms.cell.array
    inv = np.linalg.inv(lattice)
    assert len(projector.permutations) == len(rot)
    assert np.allclose(out["forces"], symmetrize_rank1(lattice, inv, forces, rot, trans, symm_map))
    assert np.allclose(out["stress"], symmetrize_rank2(lattice, inv, stress, rot))
    assert obeys_group(projector, atoms, out["forces"], out["stress"]) < 1e-12
    # a projector: idempotent; energies: the orbit means, with the same total
    again = projector.project(atoms, out)
    for key in out:
        assert np.allclose(again[key], out[key], atol=1e-13)
    assert np.isclose(out["energies"].sum(), energies.sum())
    assert np.allclose(out["energies"][projector.permutations], out["energies"][None])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fcc", "L12", "hcp"])
def test_shipped_pet_forces_obey_the_space_group_without_extra_model_calls(kind):
    atoms = symmetric_cell(kind, seed=2) * (2, 2, 2 if kind != "hcp" else 1)
    raw_calc = SymmetryCalculator(models.shipped_model("pet-emt-cual"))
    calc = SymmetryCalculator(models.shipped_model("pet-emt-cual"), space_group=True)
    calls = {"raw": 0, "projected": 0}
    for name, c in [("raw", raw_calc), ("projected", calc)]:
        original = c.evaluate

        def counting(*args, _name=name, _original=original):
            out = _original(*args)
            calls[_name] += len(next(iter(out.values())))  # rotated copies evaluated
            return out

        c.evaluate = counting
    raw_atoms, atoms = atoms.copy(), atoms.copy()
    raw_atoms.calc, atoms.calc = raw_calc, calc
    raw_forces, forces = raw_atoms.get_forces(), atoms.get_forces()
    stress = atoms.get_stress(voigt=False)
    assert obeys_group(calc.space_group, atoms, raw_forces) > 1e-6  # PET alone does not
    assert obeys_group(calc.space_group, atoms, forces, stress) < 1e-10
    assert np.abs(forces.sum(0)).max() < 1e-10
    assert atoms.get_potential_energy() == raw_atoms.get_potential_energy()
    assert calls == {"raw": 1, "projected": 1}
    atoms.get_potential_energies()
    raw_atoms.get_potential_energies()
    assert calls == {"raw": 2, "projected": 2}
    assert calc.space_group.n_searches == 1  # found once, re-used


def test_group_is_re_used_while_kept_and_searched_again_when_lost():
    atoms = symmetric_cell("L12")
    atoms.calc = SymmetryCalculator(EMT(), space_group=True)
    projector = atoms.calc.space_group
    atoms.get_forces()
    atoms.positions += 1e-7  # a rigid shift keeps the group
    atoms.get_forces()
    assert projector.n_searches == 1 and len(projector.permutations) == 48
    atoms.positions[0, 0] += 0.05
    forces = atoms.get_forces()
    assert projector.n_searches == 2 and len(projector.permutations) == 8
    assert obeys_group(projector, atoms, forces) < 1e-12


def test_identity_only_warns_and_non_periodic_is_refused():
    atoms = symmetric_cell("L12")
    atoms.rattle(0.05, seed=3)
    atoms.calc = SymmetryCalculator(EMT(), space_group=True)
    message = (
        "the space group of AlCu3 found by spglib with symprec=1e-05 has no rotation but "
        "the identity; the projection does not constrain its forces and stress (symmetrize "
        "the structure, e.g. ase.spacegroup.symmetrize.refine_symmetry, or raise symprec)"
    )
    with pytest.warns(UserWarning, match=f"^{re.escape(message)}$"):
        forces = atoms.get_forces()
    assert np.allclose(forces, EMT().get_forces(atoms), atol=1e-12)
    cluster = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.5]])
    cluster.calc = SymmetryCalculator(EMT(), space_group=True)
    message = (
        "space_group=True needs a fully periodic structure with a 3D cell (spglib finds "
        "space groups of crystals); this one has pbc=[False, False, False]; use "
        "symmetrize='average' for molecules and clusters"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        cluster.get_forces()
    with pytest.raises(ValueError, match=re.escape("symprec must be a positive float (A), got 0")):
        SpaceGroupProjector(0)


@pytest.mark.slow
def test_relaxation_keeps_the_space_group():
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    atoms = symmetric_cell("hcp", seed=4)
    atoms.set_cell(atoms.cell.array * [1.03, 1.03, 0.97], scale_atoms=True)
    start, cell = spacegroup(atoms), atoms.cell.array.copy()
    atoms.calc = SymmetryCalculator(models.shipped_model("pet-emt-cual"), space_group=True)
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-3, steps=30)
    assert start == "P6_3/mmc (194)"
    assert np.abs(atoms.cell.array - cell).max() > 0.01  # it did relax
    assert spacegroup(atoms) == start
    assert atoms.calc.space_group.n_searches == 1
