"""symmd.export: the exported metatomic model against SymmetryCalculator and
the symmetry it must have, read back by metatomic-ase and by a process that
never imports symmd."""

import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from helpers import cu_cluster, cual_cell, random_rotations, rotated_copy
from metatomic.torch import (
    AtomisticModel,
    ModelCapabilities,
    ModelMetadata,
    ModelOutput,
    load_atomistic_model,
)
from toy_models import DirectToy, direct_toy, toy_metatomic_model

import symmd
from symmd import metrics, o3
from symmd.models import shipped_model

metatomic_ase = pytest.importorskip("metatomic_ase")
PET = shipped_model("pet-emt-cual")


def triclinic_cell():
    atoms = cual_cell()
    shear = np.array([[0.0, 0.4, 0.2], [0.3, 0.0, 0.1], [0.0, 0.2, 0.0]])
    atoms.set_cell(atoms.cell.array + shear, scale_atoms=True)
    return atoms


STRUCTURES = {"cubic": cual_cell, "triclinic": triclinic_cell, "cluster": cu_cluster}


def engine(path, atoms, **kwargs):
    atoms = atoms.copy()
    atoms.calc = metatomic_ase.MetatomicCalculator(path, **kwargs)
    return atoms


def reference(model, atoms, **kwargs):
    atoms = atoms.copy()
    atoms.calc = symmd.SymmetryCalculator(model, **kwargs)
    return atoms


def compare(a, b, tol):
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=tol)
    np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=0, atol=tol)
    if a.pbc.all():
        np.testing.assert_allclose(a.get_stress(), b.get_stress(), rtol=0, atol=tol)


@pytest.mark.parametrize("degree", [2, 3, 5])
@pytest.mark.parametrize("name", list(STRUCTURES))
def test_matches_symmetry_calculator_exactly(tmp_path, degree, name):
    # float64 toy: the exported average and its engine-side gradients are the
    # calculator's to round-off, on the engine's own neighbour list
    model, path = toy_metatomic_model(uniaxial=0.02), tmp_path / "toy.pt"
    symmd.export(model, path, quadrature=degree)
    atoms = STRUCTURES[name]()
    exported = engine(path, atoms)
    compare(exported, reference(model, atoms, symmetrize="average", quadrature=degree), 1e-12)
    np.testing.assert_allclose(
        exported.get_potential_energies(),
        reference(model, atoms, symmetrize="average", quadrature=degree).get_potential_energies(),
        rtol=0,
        atol=1e-12,
    )
    # the average differs from the raw model (the test can fail)
    raw = reference(model, atoms)
    assert abs(exported.get_forces() - raw.get_forces()).max() > 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["triclinic", "cluster"])
def test_pet_float32_round_off(tmp_path, name):
    path = tmp_path / "pet.pt"
    symmd.export(PET, path, quadrature=3)
    atoms = STRUCTURES[name]()
    compare(engine(path, atoms), reference(PET, atoms, symmetrize="average", quadrature=3), 2e-5)


@pytest.mark.slow
@pytest.mark.parametrize("degree", [2, 5])
@pytest.mark.parametrize("name", list(STRUCTURES))
def test_pet_float32_round_off_all(tmp_path, degree, name):
    path = tmp_path / "pet.pt"
    symmd.export(PET, path, quadrature=degree)
    atoms = STRUCTURES[name]()
    reference_atoms = reference(PET, atoms, symmetrize="average", quadrature=degree)
    compare(engine(path, atoms), reference_atoms, 2e-5)


@pytest.mark.slow  # exports and runs TorchScript models: seconds
@pytest.mark.parametrize("name", ["triclinic", "cluster"])
def test_invariant_to_the_rules_exactness(tmp_path, name):
    # the toy energy has lambda <= 4 (uniaxial (v_z/r)^4): degree 5 is exact
    # under any O(3) element, degree 2 is not
    model = toy_metatomic_model(uniaxial=0.05)
    atoms = STRUCTURES[name]()
    errors = {}
    for degree in (5, 2):
        path = tmp_path / f"toy{degree}.pt"
        symmd.export(model, path, quadrature=degree)
        base = engine(path, atoms)
        e0, f0 = base.get_potential_energy(), base.get_forces()
        s0 = base.get_stress(voigt=False) if atoms.pbc.all() else None
        worst = 0.0
        for rot in random_rotations(4, seed=3).numpy():
            moved = engine(path, rotated_copy(atoms, rot))
            worst = max(worst, abs(moved.get_potential_energy() - e0))
            worst = max(worst, abs(moved.get_forces() - f0 @ rot.T).max())
            if s0 is not None:
                worst = max(worst, abs(moved.get_stress(voigt=False) - rot @ s0 @ rot.T).max())
        errors[degree] = worst
    assert errors[5] < 1e-12
    assert errors[2] > 1e-6


def direct_outputs(path, atoms):
    """Non-conservative forces [N, 3] and stress [3, 3] (None for a cluster)
    straight from the exported model (metatomic-ase would remove the mean
    force)."""
    calc = metatomic_ase.MetatomicCalculator(path)
    request = {"non_conservative_force": ModelOutput(sample_kind="atom")}
    if atoms.pbc.all():
        request["non_conservative_stress"] = ModelOutput(sample_kind="system")
    out = calc.run_model(atoms, request)
    forces = out["non_conservative_force"].block().values[:, :, 0].numpy()
    if not atoms.pbc.all():
        return forces, None
    return forces, out["non_conservative_stress"].block().values[0, :, :, 0].numpy()


def test_direct_outputs_back_transformed(tmp_path):
    model, path = direct_toy(), tmp_path / "direct.pt"
    symmd.export(model, path, quadrature=3)
    atoms = cual_cell()
    forces, stress = direct_outputs(path, atoms)
    ref = reference(model, atoms, symmetrize="average", quadrature=3, non_conservative=True)
    np.testing.assert_allclose(forces, ref.get_forces(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(stress, ref.get_stress(voigt=False), rtol=0, atol=1e-12)
    # the lab-frame constant force averages out (the raw model has a net force)
    raw = reference(model, atoms, non_conservative=True)
    assert abs(raw.get_forces().sum(0)).max() > 0.5
    assert abs(forces.sum(0)).max() < 1e-12
    # the conservative path: the engine differentiates the averaged energy
    compare(engine(path, atoms), reference(model, atoms, symmetrize="average", quadrature=3), 1e-12)


@pytest.mark.parametrize("name", ["cubic", "cluster"])
def test_project_and_none(tmp_path, name):
    model, atoms = direct_toy(), STRUCTURES[name]()
    raw = reference(model, atoms, non_conservative=True)
    raw_forces = raw.get_forces()
    symmd.export(model, tmp_path / "none.pt", symmetrize="none")
    forces, raw_stress = direct_outputs(tmp_path / "none.pt", atoms)
    np.testing.assert_allclose(forces, raw_forces, rtol=0, atol=1e-12)
    symmd.export(model, tmp_path / "project.pt", symmetrize="project")
    forces, stress = direct_outputs(tmp_path / "project.pt", atoms)
    assert abs(raw_forces.sum(0)).max() > 0.3
    assert abs(forces.sum(0)).max() < 1e-12
    expected = symmd.projection.project_forces(raw_forces, atoms.positions, name == "cluster")
    np.testing.assert_allclose(forces, expected, rtol=0, atol=1e-12)
    if name == "cluster":
        assert abs(np.cross(atoms.positions, forces).sum(0)).max() < 1e-12
    else:
        # SymmetryCalculator reports the symmetric part; the raw one is not
        sym = 0.5 * (raw_stress + raw_stress.T)
        np.testing.assert_allclose(sym, raw.get_stress(voigt=False), rtol=0, atol=1e-12)
        assert abs(raw_stress - raw_stress.T).max() > 1e-3
        np.testing.assert_allclose(stress, 0.5 * (raw_stress + raw_stress.T), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["cubic", "cluster"])
def test_average_project_matches_the_calculator(tmp_path, name):
    """The exported twirl, projected: the calculator's "average+project"
    to round-off, with no net force (nor, for the cluster, net torque)."""
    model, atoms = direct_toy(), STRUCTURES[name]()
    path = tmp_path / "both.pt"
    symmd.export(model, path, symmetrize="average+project", quadrature=3)
    forces, stress = direct_outputs(path, atoms)
    ref = reference(model, atoms, symmetrize="average+project", quadrature=3, non_conservative=True)
    np.testing.assert_allclose(forces, ref.get_forces(), rtol=0, atol=1e-12)
    assert abs(forces.sum(0)).max() < 1e-12
    if name == "cluster":
        assert abs(np.cross(atoms.positions, forces).sum(0)).max() < 1e-12
    else:
        np.testing.assert_allclose(stress, ref.get_stress(voigt=False), rtol=0, atol=1e-12)


def test_direct_outputs_answer_to_the_ipi_and_metatomic_names(tmp_path):
    """i-PI's driver asks for ``non_conservative_forces``, metatomic for
    ``non_conservative_force``: the exported model serves both, projected."""
    from toy_models import morse_direct

    path, atoms = tmp_path / "project.pt", cu_cluster(19)
    symmd.export(morse_direct(), path, symmetrize="project")
    assert {"non_conservative_force", "non_conservative_forces", "non_conservative_stress"} <= set(
        load_atomistic_model(str(path)).capabilities().outputs
    )
    calc = metatomic_ase.MetatomicCalculator(path)
    values = {}
    for name in ("non_conservative_forces", "non_conservative_force"):
        out = calc.run_model(atoms, {name: ModelOutput(sample_kind="atom")})
        values[name] = out[name].block().values[:, :, 0].numpy()
    forces = values["non_conservative_force"]
    np.testing.assert_array_equal(values["non_conservative_forces"], forces)
    assert np.abs(forces.sum(0)).max() < 1e-13
    assert np.abs(np.cross(atoms.positions - atoms.positions.mean(0), forces).sum(0)).max() < 1e-13
    # in a periodic vacuum box (as i-PI and LAMMPS require) no pair crosses the
    # boundary: the cluster is isolated and its torque is removed too
    atoms.center(vacuum=6.0)
    atoms.pbc = True
    out = calc.run_model(atoms, {"non_conservative_force": ModelOutput(sample_kind="atom")})
    boxed = out["non_conservative_force"].block().values[:, :, 0].numpy()
    np.testing.assert_allclose(boxed, forces, rtol=0, atol=1e-13)


@pytest.mark.slow  # exports and runs TorchScript models: seconds
def test_capabilities_are_the_wrapped_models(tmp_path):
    path = tmp_path / "pet.pt"
    symmd.export(PET, path, quadrature=2, monitor_every=5, uncertainty=True)
    new, old = (
        load_atomistic_model(str(path)).capabilities(),
        load_atomistic_model(PET).capabilities(),
    )
    assert new.atomic_types == old.atomic_types
    assert new.interaction_range == old.interaction_range
    assert new.length_unit == old.length_unit
    assert new.dtype == old.dtype
    assert new.supported_devices == old.supported_devices
    assert new.outputs["energy"].unit == old.outputs["energy"].unit
    assert {"symmd::equivariance_error", "energy_uncertainty"} <= set(new.outputs)


@pytest.mark.slow
def test_fresh_process_without_symmd(tmp_path):
    path = tmp_path / "pet.pt"
    symmd.export(PET, path, quadrature=2)
    atoms = cual_cell()
    expected = engine(path, atoms).get_potential_energy()
    atoms.write(tmp_path / "cell.xyz")
    code = (
        "import sys, ase.io\n"
        "from metatomic_ase import MetatomicCalculator\n"
        f"atoms = ase.io.read({str(tmp_path / 'cell.xyz')!r})\n"
        f"atoms.calc = MetatomicCalculator({str(path)!r})\n"
        "print(float(atoms.get_potential_energy()))\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'symmd'], 'symmd imported'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip().splitlines()[-1]) == pytest.approx(expected, abs=1e-5)


def _monitor_outputs(path, atoms, calls):
    from metatomic.torch import ModelOutput

    calc = metatomic_ase.MetatomicCalculator(path)
    request = {
        "symmd::equivariance_error": ModelOutput(sample_kind="system"),
        "energy": ModelOutput(sample_kind="system"),
    }
    return [
        float(calc.run_model(atoms, request)["symmd::equivariance_error"].block().values[0, 0])
        for _ in range(calls)
    ]


def test_monitor_holds_between_checks(tmp_path):
    path = tmp_path / "toy.pt"
    symmd.export(toy_metatomic_model(), path, quadrature=2, monitor_every=10, seed=4)
    values = _monitor_outputs(path, cual_cell(), 21)
    assert values[0] > 0 and len(set(values[:10])) == 1
    assert values[10] != values[0] and len(set(values[10:20])) == 1 and values[20] != values[10]


@pytest.mark.slow  # exports and runs TorchScript models: seconds
def test_monitor_matches_symmd_monitor(tmp_path):
    # two independent unbiased estimates of A^2 of the raw energy agree within
    # their standard errors, and with the exact value (degree-11 rule:
    # the toy energy has lambda <= 2, so A is exact there)
    model, atoms, m = toy_metatomic_model(), cual_cell(), 48
    path = tmp_path / "toy.pt"
    symmd.export(model, path, quadrature=2, monitor_every=10, rotations=m, seed=1)
    a2_export = _monitor_outputs(path, atoms, 1)[0] ** 2
    monitor = symmd.Monitor(every=1, rotations=m, seed=2)
    calc = symmd.SymmetryCalculator(model, monitor=monitor)
    atoms.calc = calc
    atoms.get_forces()
    row = monitor.history[-1]
    se = math.hypot(row["a2_energy_se"], a2_export * math.sqrt(2 / (m - 1)))
    assert abs(a2_export - row["a2_energy"]) < 3 * se
    q = o3.quadrature(11)
    u = symmd.models.evaluate_rotated(symmd.models.load(model), atoms, q, ["energy"])
    exact = float(metrics.equivariance_error(u["energy"], q, "scalar")) ** 2
    assert abs(a2_export - exact) < 3 * exact * math.sqrt(2 / (m - 1))


def test_uncertainty_warns_above_threshold(tmp_path):
    path = tmp_path / "toy.pt"
    atoms = cual_cell()
    symmd.export(toy_metatomic_model(), path, monitor_every=1, rotations=8, uncertainty=True)
    probe = engine(path, atoms, uncertainty_threshold=1e9)
    from metatomic.torch import ModelOutput

    out = probe.calc.run_model(atoms, {"energy_uncertainty": ModelOutput(sample_kind="atom")})
    per_atom = out["energy_uncertainty"].block().values[:, 0]
    assert per_atom.shape == (len(atoms),) and float(per_atom.min()) == float(per_atom.max()) > 0
    value = float(per_atom[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine(path, atoms, uncertainty_threshold=1e-3 * value).get_potential_energy()
    assert any("uncertainties are larger than the threshold" in str(w.message) for w in caught)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine(path, atoms, uncertainty_threshold=1e3 * value).get_potential_energy()
    assert not any("uncertainties are larger" in str(w.message) for w in caught)


@pytest.mark.slow  # exports and runs TorchScript models: seconds
def test_reorient_keeps_exact_rules_exact(tmp_path):
    model, atoms = toy_metatomic_model(uniaxial=0.05), cu_cluster()
    ref = reference(model, atoms, symmetrize="average", quadrature=5)
    symmd.export(model, tmp_path / "r5.pt", quadrature=5, reorient=True, seed=0)
    calc = metatomic_ase.MetatomicCalculator(tmp_path / "r5.pt")
    symmd.export(model, tmp_path / "r2.pt", quadrature=2, reorient=True, seed=0)
    calc2 = metatomic_ase.MetatomicCalculator(tmp_path / "r2.pt")
    energies, energies2 = [], []
    for _ in range(3):
        calc.reset(), calc2.reset()
        energies.append(calc.get_potential_energy(atoms))
        energies2.append(calc2.get_potential_energy(atoms))
    np.testing.assert_allclose(energies, ref.get_potential_energy(), atol=1e-12, rtol=0)
    assert len(set(energies2)) == 3  # an inexact rule now varies from call to call


@pytest.mark.slow
def test_auto_rule(tmp_path):
    model, atoms = toy_metatomic_model(uniaxial=0.05), cu_cluster()
    rec = symmd.recommend_quadrature(model, atoms, 1e-6)
    assert rec.reached and rec.degree > 2
    path = tmp_path / "auto.pt"
    symmd.export(model, path, quadrature="auto", structure=atoms, tolerance=1e-6)
    ref = reference(model, atoms, symmetrize="average", quadrature=rec.quadrature)
    compare(engine(path, atoms), ref, 1e-12)
    with pytest.raises(ValueError, match="quadrature='auto' chooses the rule on a structure"):
        symmd.export(model, tmp_path / "x.pt", quadrature="auto")


def _no_energy_model():
    caps = ModelCapabilities(
        outputs={"mtt::thing": ModelOutput(sample_kind="system")},
        atomic_types=[29],
        interaction_range=4.0,
        length_unit="angstrom",
        supported_devices=["cpu"],
        dtype="float64",
    )
    return AtomisticModel(DirectToy().eval(), ModelMetadata(), caps)


def test_clear_errors(tmp_path):
    from ase.calculators.emt import EMT

    out = tmp_path / "x.pt"
    with pytest.raises(TypeError, match=r"^a EMT cannot be exported: .*SymmetryCalculator"):
        symmd.export(EMT(), out)
    with pytest.raises(TypeError, match=r"^a function cannot be exported: .*SymmetryCalculator"):
        symmd.export(lambda *args: {"energy": 0.0}, out)
    with pytest.raises(ValueError, match=r"^the metatomic model has no 'energy' output"):
        symmd.export(_no_energy_model(), out)
    with pytest.raises(ValueError, match=r"^degree=-1 is not supported"):
        symmd.export(PET, out, quadrature=-1)
    with pytest.raises(FileNotFoundError, match="the directory .* does not exist; create it"):
        symmd.export(PET, tmp_path / "missing" / "x.pt")
    with pytest.raises(ValueError, match="symmetrize must be one of"):
        symmd.export(PET, out, symmetrize="adaptive")
    with pytest.raises(ValueError, match="uncertainty=True .* needs monitor_every"):
        symmd.export(PET, out, uncertainty=True)
    with pytest.raises(ValueError, match="rotations must be an int >= 2, got 1"):
        symmd.export(PET, out, monitor_every=3, rotations=1)
    assert not out.exists()


def test_cli_export(tmp_path, capsys):
    from symmd.cli import main

    out = tmp_path / "cli.pt"
    assert main(["export", PET, "-o", str(out), "--degree", "2", "--monitor-every", "5"]) == 0
    assert "symmd::equivariance_error" in load_atomistic_model(str(out)).capabilities().outputs
    assert main(["export", PET, "-o", str(tmp_path / "no" / "x.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_copies_against_metatomic_grids():
    # the sizes quoted in benchmarks/README.md: symmd's rule of degree L and
    # metatomic's SymmetrizedModel grid of degree L and 2L + 1
    from metatomic.torch.o3 import SymmetrizedModel

    def metatomic_copies(grid):
        wrapper = SymmetrizedModel.wrap(
            toy_metatomic_model(), max_angular_momentum_target=0, max_angular_momentum_grid=grid
        )
        return 2 * sum(int(b.matrices.shape[0]) for b in wrapper.module._batches)

    assert [len(o3.quadrature(L)) for L in (2, 3, 5)] == [24, 48, 120]
    assert [metatomic_copies(L) for L in (2, 3, 5)] == [36, 48, 168]
    assert [metatomic_copies(2 * L + 1) for L in (2, 3, 5)] == [168, 416, 1200]


@pytest.mark.slow
def test_monitor_draws_apart_or_joined_give_the_same_estimates(tmp_path):
    # on a CPU the draws run in a forward-only call of their own; joined to the
    # step's batch (as on an accelerator) they are the same draws and give the
    # same estimates, and apart they leave the step's own outputs untouched
    path, plain = tmp_path / "monitored.pt", tmp_path / "plain.pt"
    model, atoms = direct_toy(), cual_cell()
    symmd.export(model, path, quadrature=2, monitor_every=2, seed=3)
    symmd.export(model, plain, quadrature=2, seed=3)
    request = {
        "energy": ModelOutput(sample_kind="system"),
        "non_conservative_force": ModelOutput(sample_kind="atom"),
        "symmd::equivariance_error": ModelOutput(sample_kind="system"),
        "symmd::force_equivariance_error": ModelOutput(sample_kind="atom"),
    }
    runs = {}
    for join in ("auto", "join", "apart", None):
        loaded = load_atomistic_model(str(plain if join is None else path))
        if join is not None:
            loaded.module.join_draws = join
        calc = metatomic_ase.MetatomicCalculator(loaded)
        wanted = {k: v for k, v in request.items() if join is not None or "symmd" not in k}
        runs[join] = [
            {k: v.block().values.numpy().copy() for k, v in calc.run_model(frame, wanted).items()}
            for frame in (atoms, rotated_copy(atoms, random_rotations(1)[0]), atoms)
        ]
    for call in range(3):
        for key in request:
            np.testing.assert_allclose(
                runs["join"][call][key], runs["apart"][call][key], rtol=1e-10, atol=1e-14
            )
            assert np.array_equal(runs["auto"][call][key], runs["apart"][call][key])
            if "symmd" not in key:  # bitwise the unmonitored model's
                assert np.array_equal(runs["apart"][call][key], runs[None][call][key])
    errors = [run["symmd::equivariance_error"][0, 0] for run in runs["apart"]]
    assert errors[0] > 0 and errors[1] == errors[0] and errors[2] != errors[0]  # held, redrawn
