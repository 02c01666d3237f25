"""The calculator's modes as cures (symmd/_modes.py): ``"average+project"``
is exactly equivariant and free of net force and torque, and an adaptive
calculator adds the cure of what the monitor flagged: the projection for the
conservation metrics, averaging for the rest.

The toy is analytic (float64): Morse forces, lab-frame errors (a constant
force c and a pair term omega x v; averaging removes both) and an equivariant but unbalanced
pair term, k_i sum_j fc(r_ij) (r_j - r_i) with k_i set by the species of atom
i (a twirl keeps it, so it keeps a net force and torque that only the
projection removes)."""

import warnings

import numpy as np
import pytest
import torch
from helpers import cu_cluster
from scipy.spatial.transform import Rotation
from toy_models import morse_terms

from symmd import InstabilityWarning, Monitor, SymmetryCalculator
from symmd._modes import MODES, compose, cure, parts
from symmd.conservation import METRICS as CONSERVATION_METRICS

C = torch.tensor([0.02, -0.01, 0.015], dtype=torch.float64)
OMEGA = torch.tensor([0.0, 0.0, 0.01], dtype=torch.float64)
K_AL = 0.05  # eV/A^2: the unbalanced equivariant term acts on Al atoms only


def unbalanced(positions, types, cell, pbc, system_index):
    """Energy and direct forces of the toy (non-periodic, batched)."""
    n = positions.shape[0]
    i, j = torch.triu_indices(n, n, 1)
    same = system_index[i] == system_index[j]
    i, j = i[same], j[same]
    v = positions[j] - positions[i]
    pair, along, spin = morse_terms(v, OMEGA, 0.0)
    along = along + spin
    fc = 0.5 * (torch.cos(torch.pi * torch.linalg.norm(v, dim=-1) / 5.0) + 1.0)
    k = K_AL * (types == 13).to(positions.dtype)
    forces = torch.zeros_like(positions).index_add(0, i, along + (k[i] * fc)[:, None] * v)
    forces = forces.index_add(0, j, -along - (k[j] * fc)[:, None] * v) + C.to(positions.dtype)
    energy = torch.zeros(cell.shape[0], dtype=positions.dtype).index_add(0, system_index[i], pair)
    return {"energy": energy, "forces": forces}


def structure():
    atoms = cu_cluster(19, seed=4)
    atoms.numbers[::3] = 13
    return atoms


def net(atoms, forces):
    rel = atoms.positions - atoms.get_center_of_mass()
    return np.abs(forces.sum(0)).max(), np.abs(np.cross(rel, forces).sum(0)).max()


def forces(mode, atoms, **kwargs):
    calc = SymmetryCalculator(
        unbalanced, symmetrize=mode, quadrature=2, non_conservative=True, **kwargs
    )
    return calc.get_forces(atoms)


def test_parts_compose_and_cure():
    assert [parts(m) for m in MODES] == [(False, False), (False, True), (True, False), (True, True)]
    assert [compose(*parts(m)) for m in MODES] == list(MODES)
    projectable = CONSERVATION_METRICS
    assert cure("none", ["net_force"], projectable) == "project"
    assert cure("none", ["rel_forces"], projectable) == "average"
    assert cure("none", ["momentum", "a_forces_max"], projectable) == "average+project"
    assert cure("project", ["min_distance"], projectable) == "average+project"
    assert cure("average", ["net_torque"], projectable) == "average+project"
    assert cure("average+project", ["rel_forces", "net_force"], projectable) == "average+project"
    assert cure("average", [], projectable) == "average"
    with pytest.raises(ValueError, match=r"^mode must be one of \['none', 'project', "):
        parts("adaptive")


def test_average_keeps_the_net_force_of_an_equivariant_imbalance_and_average_project_removes_it():
    atoms = structure()
    raw, averaged, both = (forces(m, atoms) for m in ("none", "average", "average+project"))
    # the twirl removes the constant c exactly but keeps the unbalanced term
    np.testing.assert_allclose(averaged.sum(0), raw.sum(0) - len(atoms) * C.numpy(), atol=1e-12)
    assert min(net(atoms, averaged)) > 1e-2
    assert max(net(atoms, both)) < 1e-13
    # average+project is the projection of the twirl: the change is a rigid motion
    change = averaged - both
    rel = atoms.positions - atoms.get_center_of_mass()
    basis = np.stack(
        [np.tile(e, len(atoms)) for e in np.eye(3)] + [np.cross(e, rel).ravel() for e in np.eye(3)],
        1,
    )
    coeff = np.linalg.lstsq(basis, change.ravel(), rcond=None)[0]
    assert np.abs(basis @ coeff - change.ravel()).max() < 1e-13


def test_average_project_is_exactly_equivariant():
    atoms = structure()
    rotated = atoms.copy()
    rot = Rotation.random(random_state=7).as_matrix()
    rotated.positions = atoms.positions @ rot.T
    f, f_rot = forces("average+project", atoms), forces("average+project", rotated)
    np.testing.assert_allclose(f_rot, f @ rot.T, rtol=0, atol=1e-12)
    # project alone is not: it removes c but not the pair term omega x v
    g, g_rot = forces("project", atoms), forces("project", rotated)
    assert np.abs(g_rot - g @ rot.T).max() > 1e-3


def adaptive(every, thresholds=None, **options):
    """An adaptive calculator on the toy after its first call, its monitor and
    the structure."""
    monitor = Monitor(
        every=every, ensemble="nve", action="warn", threshold=thresholds, seed=0, **options
    )
    calc = SymmetryCalculator(
        unbalanced, symmetrize="adaptive", quadrature=2, non_conservative=True, monitor=monitor
    )
    atoms = structure()
    atoms.calc = calc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InstabilityWarning)
        atoms.get_forces()
    return calc, monitor, atoms


def test_adaptive_projects_for_a_net_force_without_averaging():
    calc, monitor, _ = adaptive(0)  # conservation checks only: no equivariance error
    assert set(monitor.events[0]["flags"]) == {"net_force", "net_torque"}
    assert calc.mode == "project"
    assert [(s["from"], s["to"]) for s in calc.switches] == [("none", "project")]


def test_adaptive_averages_and_projects_when_both_kinds_are_flagged():
    calc, monitor, _ = adaptive(1, {"rel_forces": 1e-6})
    assert {"rel_forces", "net_force"} <= set(monitor.events[0]["flags"])
    assert calc.mode == "average+project"
    atoms = calc.atoms.copy()
    f = calc.get_forces(atoms)
    assert max(net(atoms, f)) < 1e-13


def test_back_off_from_average_project_keeps_the_projection():
    calc, monitor, atoms = adaptive(1, {"rel_forces": 1e-6}, back_off=True, patience=2)
    assert calc.mode == "average+project"
    monitor.thresholds["rel_forces"] = 100.0  # calm from now on
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InstabilityWarning)
        for _ in range(3):
            atoms.positions[0, 0] += 0.01
            atoms.get_forces()
    assert calc.mode == "project"
    assert [s["to"] for s in calc.switches] == ["average+project", "project"]


def test_set_mode_names_the_modes():
    calc = SymmetryCalculator(unbalanced, non_conservative=True)
    with pytest.raises(
        ValueError,
        match=r"^mode must be one of \['none', 'project', 'average', 'average\+project'\], "
        r"got 'adaptive'$",
    ):
        calc.set_mode("adaptive")
    calc.set_mode("average+project", "by hand")
    assert calc.mode == "average+project" and calc.switches[-1]["reason"] == "by hand"
