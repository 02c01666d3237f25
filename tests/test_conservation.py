"""Direct (non-conservative) forces in every mode, and the monitor's
momentum, angular-momentum, net-force and net-torque checks.

The toys (tests/toy_models.py) are analytic: the direct force is the exact
gradient of an invariant Morse energy plus lab-frame errors (a constant
force c and a pair term omega x v that exerts a torque), so every projection
and average has an exact answer in float64."""

import re
import warnings

import numpy as np
import pytest
import torch
from ase import units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from ase.stress import full_3x3_to_voigt_6_stress
from helpers import cu_cluster, cual_cell
from toy_models import morse_direct, morse_direct_callable, toy_metatomic_model

from symmd import InstabilityWarning, Monitor, SymmetryCalculator, conservation
from symmd.conservation import ConservationCheck, rigid_body

C = np.array([0.02, -0.01, 0.015])
S = np.array([[0.0, 1e-3, 0.0], [0.0, 0.0, -2e-3], [5e-4, 0.0, 0.0]])


def exact_morse(atoms):
    """Forces (and stress) of the invariant Morse energy alone."""
    calc = SymmetryCalculator(morse_direct(c=(0, 0, 0), omega=(0, 0, 0), s=[0] * 9))
    forces = calc.get_forces(atoms)
    return forces, calc.get_stress(atoms) if atoms.pbc.all() else None


def rigid_columns(positions):
    """[3N, 6]: rigid translations and rotations about the centroid."""
    rel = positions - positions.mean(0)
    cols = []
    for a in np.eye(3):
        cols.append(np.tile(a, len(rel)))
        cols.append(np.cross(a, rel).ravel())
    return np.stack(cols, 1)


def relative_net(atoms, forces):
    rel = atoms.positions - atoms.positions.mean(0)
    force = np.linalg.norm(forces.sum(0)) / np.linalg.norm(forces, axis=1).sum()
    torque = (
        np.linalg.norm(np.cross(rel, forces).sum(0))
        / (np.linalg.norm(rel, axis=1) * np.linalg.norm(forces, axis=1)).sum()
    )
    return force, torque


@pytest.mark.parametrize("toy", ["callable", "metatomic"])
def test_project_is_the_exact_minimal_change_to_zero_net_force_and_torque(toy):
    atoms = cu_cluster(38)
    model = morse_direct_callable() if toy == "callable" else morse_direct()
    raw = SymmetryCalculator(model, non_conservative=True).get_forces(atoms)
    calc = SymmetryCalculator(model, symmetrize="project", non_conservative=True)
    projected = calc.get_forces(atoms)
    before, after = relative_net(atoms, raw), relative_net(atoms, projected)
    assert min(before) > 1e-3
    assert max(after) < 1e-14
    # minimal norm: the change is a rigid motion, the result orthogonal to all of them
    basis = rigid_columns(atoms.positions)
    change = (raw - projected).ravel()
    coeff = np.linalg.lstsq(basis, change, rcond=None)[0]
    assert np.abs(basis @ coeff - change).max() < 1e-14
    assert np.abs(basis.T @ projected.ravel()).max() < 1e-12
    # the Morse force is already free of net force and torque: only the errors change
    exact, _ = exact_morse(atoms)
    assert np.abs(basis.T @ exact.ravel()).max() < 1e-12


def test_project_on_a_periodic_cell_removes_the_net_force_and_keeps_the_torque():
    atoms = cual_cell(seed=1, rattle=0.1)
    raw = SymmetryCalculator(morse_direct(), non_conservative=True)
    calc = SymmetryCalculator(morse_direct(), symmetrize="project", non_conservative=True)
    f_raw, f = raw.get_forces(atoms), calc.get_forces(atoms)
    np.testing.assert_allclose(f, f_raw - f_raw.mean(0), rtol=0, atol=1e-15)
    assert np.abs(f.sum(0)).max() < 1e-13 and np.abs(f_raw.sum(0) - len(atoms) * C).max() < 1e-12
    # the direct stress: symmetrized, and its antisymmetric part reported
    exact_forces, exact_stress = exact_morse(atoms)
    sym = exact_stress + full_3x3_to_voigt_6_stress((S + S.T) / 2)
    np.testing.assert_allclose(calc.get_stress(atoms), sym, rtol=0, atol=1e-15)
    antisym = np.linalg.norm((S - S.T) / 2)
    assert calc.results["stress_antisymmetric"] == pytest.approx(antisym, rel=1e-12)


@pytest.mark.parametrize("structure", ["cluster", "cell"])
def test_average_twirls_the_direct_outputs_to_the_invariant_force_and_stress(structure):
    """Both lab-frame errors are linear in the rotation and the constant
    stress is traceless: a degree-2 rule removes all of them exactly."""
    atoms = cu_cluster(38) if structure == "cluster" else cual_cell(seed=2, rattle=0.1)
    calc = SymmetryCalculator(
        morse_direct(), symmetrize="average", quadrature=2, non_conservative=True
    )
    exact_forces, exact_stress = exact_morse(atoms)
    np.testing.assert_allclose(calc.get_forces(atoms), exact_forces, rtol=0, atol=1e-13)
    if exact_stress is not None:
        np.testing.assert_allclose(calc.get_stress(atoms), exact_stress, rtol=0, atol=1e-15)
        assert calc.results["stress_antisymmetric"] < 1e-15
    assert calc.results["equivariance_error_forces"].min() > np.linalg.norm(C) / 2


@pytest.mark.parametrize("mode", ["none", "project", "average"])
def test_direct_forces_build_no_autograd_graph(mode, monkeypatch):
    model = morse_direct()
    seen, copies = [], []

    def spy(module, args, kwargs):
        systems = args[0] if args else kwargs["systems"]
        seen.append((torch.is_grad_enabled(), any(s.positions.requires_grad for s in systems)))
        copies.append(len(systems))

    model.module.register_forward_pre_hook(spy, with_kwargs=True)

    def no_backward(*args, **kwargs):
        raise AssertionError("a backward pass was taken")

    monkeypatch.setattr(torch.autograd, "grad", no_backward)
    monkeypatch.setattr(torch.Tensor, "backward", no_backward)
    calc = SymmetryCalculator(
        model,
        symmetrize=mode,
        quadrature=2,
        non_conservative=True,
        monitor=Monitor(every=1),
    )
    atoms = cual_cell(seed=3, rattle=0.1)
    atoms.calc = calc
    atoms.get_forces(), atoms.get_stress()
    # the step and the monitor's 2 draws (joined to the step's call, or not)
    assert sum(copies) >= (26 if mode == "average" else 3)
    assert not any(grad or positions for grad, positions in seen)
    monkeypatch.undo()
    SymmetryCalculator(model).get_forces(atoms)  # the spy sees the conservative graph
    assert seen[-1] == (True, True)


def test_direct_stress_is_skipped_without_periodicity_or_without_a_stress_output():
    cluster = cu_cluster(13)
    calc = SymmetryCalculator(morse_direct(), symmetrize="project", non_conservative=True)
    cluster.calc = calc
    cluster.get_forces()
    assert "stress" not in calc.results
    cell = cual_cell()
    no_stress = SymmetryCalculator(morse_direct(stress=False), non_conservative=True)
    cell.calc = no_stress
    assert cell.get_forces().shape == (32, 3) and "stress" not in no_stress.results
    with pytest.raises(
        PropertyNotImplementedError,
        match="^stress with non_conservative=True needs the model's 'non_conservative_stress' "
        "output, which this model does not have$",
    ):
        cell.get_stress()


def test_a_model_without_direct_outputs_is_refused_naming_what_it_has():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "non_conservative=True but the model has no 'non_conservative_force(s)' output; "
            "its outputs are ['energy']; use non_conservative=False"
        ),
    ):
        SymmetryCalculator(toy_metatomic_model(), non_conservative=True)
    calc = SymmetryCalculator(morse_direct_callable(conservative=True), non_conservative=True)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "the model returned no ['forces'] output (it returned ['energy']); "
            "non_conservative=True needs them returned directly"
        ),
    ):
        calc.get_forces(cu_cluster(6))


def test_the_monitors_equivariance_error_covers_the_direct_forces():
    """z(g) = F_Morse(x) + c R: every atom has the same spread, which the
    conservative forces of the same (invariant) energy do not have."""
    atoms = cu_cluster(19)
    for non_conservative in (True, False):
        model = morse_direct(omega=(0, 0, 0))
        calc = SymmetryCalculator(
            model, non_conservative=non_conservative, monitor=Monitor(every=1, seed=4)
        )
        calc.get_forces(atoms)
        a = calc.results["equivariance_error_forces"]
        if non_conservative:
            assert np.ptp(a) < 1e-12 and 0 < a[0] <= 2 * np.linalg.norm(C)
        else:
            assert a.max() < 1e-12


# -- the monitor's conservation checks ------------------------------------------


def md(
    model, atoms, steps, *, mode="none", ensemble="nve", temperature=300.0, seed=0, nc=True, every=0
):
    """MD at 1 fs; returns (monitor, [(P, L, T, E_total) per step])."""
    atoms = atoms.copy()
    monitor = Monitor(every=every, ensemble=ensemble, action="warn")
    atoms.calc = SymmetryCalculator(model, symmetrize=mode, non_conservative=nc, monitor=monitor)
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    if ensemble == "nve":
        dyn = VelocityVerlet(atoms, units.fs)
    else:
        dyn = Langevin(
            atoms, units.fs, temperature_K=temperature, friction=0.02 / units.fs, rng=rng
        )
    trace = []

    def record():
        state = rigid_body(atoms.positions, atoms.get_momenta(), atoms.get_masses())
        trace.append((state["P"], state["L"], atoms.get_temperature(), atoms.get_total_energy()))

    dyn.attach(record, interval=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InstabilityWarning)
        dyn.run(steps)
    return monitor, trace


def first_flags(monitor):
    first = {}
    for event in monitor.events:
        for name in event["flags"]:
            first.setdefault(name, event["step"])
    return first


def test_project_conserves_momentum_and_angular_momentum_to_round_off_in_nve():
    monitor, trace = md(morse_direct_callable(), cu_cluster(38), 60, mode="project")
    p = np.array([t[0] for t in trace])
    angular = np.array([t[1] for t in trace])
    scale_p = np.abs(p).max() + 1.0
    assert np.abs(p - p[0]).max() < 1e-12 * scale_p
    assert np.abs(angular - angular[0]).max() < 1e-12 * (np.abs(angular).max() + 1.0)
    assert monitor.events == []
    assert max(row["momentum"] for row in monitor.history or [{"momentum": 0}]) < 1e-9


@pytest.mark.slow
def test_raw_direct_nve_is_flagged_before_the_temperature_drifts():
    """Weak lab-frame errors: the net force and torque are flagged at the
    first step; the momentum and angular momentum they pump are flagged
    while the work of the direct forces (the drift of the total energy in
    NVE) is still below a tenth of the kinetic energy (a 10% temperature
    drift), and that heating does come later in the run."""
    model = morse_direct_callable(c=(0.004, -0.002, 0.003), omega=(0.0, 0.0, 0.002))
    atoms = cu_cluster(38)
    monitor, trace = md(model, atoms, 1000)
    first = first_flags(monitor)
    assert first["net_force"] == 0 and first["net_torque"] == 0
    assert {"momentum", "angular_momentum"} <= set(first)
    heat = np.array([t[3] for t in trace]) - trace[0][3]
    tenth = 0.1 * 1.5 * len(atoms) * units.kB * trace[0][2]
    earlier, later = sorted([first["momentum"], first["angular_momentum"]])
    assert abs(heat[: earlier + 1]).max() < tenth / 2
    assert abs(heat[: later + 1]).max() < tenth
    assert heat.max() > tenth
    row = next(r for r in monitor.history if "momentum" in r["flags"].split(";"))
    assert row["momentum"] > conservation.NVE_LIMIT


def test_flag_messages_say_what_is_wrong_and_the_fix():
    monitor = Monitor(every=0, ensemble="nve", action="warn")
    calc = SymmetryCalculator(morse_direct_callable(), non_conservative=True, monitor=monitor)
    atoms = cu_cluster(13)
    with pytest.warns(InstabilityWarning) as record:
        calc.get_forces(atoms)
    message = str(record[0].message)
    assert re.fullmatch(
        r"step 0: net_force = [\d.]+ eV/A: the forces do not sum to zero \(limit [\d.e-]+ eV/A, "
        r"which gives the centre of mass kT/2 within 1 ps\); symmetrize='project' removes it "
        r"\(also: net_torque\)",
        message,
    ), message
    assert conservation.reason("angular_momentum", 2.5, 1.0) == (
        "angular_momentum changed by 2.5 thermal units sqrt(I kT) since the start "
        "(limit 1): a net torque spins the structure up; symmetrize='project' removes it"
    )
    assert conservation.reason("momentum", 9.0, 8.0) == (
        "momentum changed by 9 thermal units sqrt(M kT) since the start "
        "(limit 8): a net force drives the centre of mass; symmetrize='project' removes it"
    )


def test_thermal_units_of_a_rigid_motion():
    """A rigid translation or rotation added to thermal momenta: x^2 / 2 is the
    kinetic energy of the added rigid motion in units of kT, and a translation
    leaves L about the centre of mass unchanged, a rotation P."""
    atoms = cu_cluster(13)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(1))
    p0, masses = atoms.get_momenta(), atoms.get_masses()
    check = ConservationCheck({}, "nve")
    forces = np.zeros((13, 3))
    t0 = atoms.get_temperature()
    check.observe(atoms, forces)
    state = rigid_body(atoms.positions, p0, masses)
    for kind in ("translation", "rotation"):
        if kind == "translation":
            velocity = np.array([0.01, -0.02, 0.005])
            added = masses[:, None] * velocity
            energy = 0.5 * masses.sum() * velocity @ velocity
        else:
            omega = np.array([0.002, 0.001, -0.003])
            added = masses[:, None] * np.cross(omega, atoms.positions - state["R"])
            energy = 0.5 * omega @ state["I"] @ omega
        atoms.set_momenta(p0 + added)
        kt = units.kB * max(t0, atoms.get_temperature())
        row, _ = check.observe(atoms, forces)
        moved, still = ("momentum", "angular_momentum")[:: 1 if kind == "translation" else -1]
        assert row[moved] == pytest.approx(np.sqrt(2 * energy / kt), rel=1e-10)
        assert row[still] == pytest.approx(0.0, abs=1e-10)


def test_md_after_a_relaxation_starts_the_momentum_reference_afresh():
    """Steps at rest (an optimizer sets no momenta) then thermal velocities: the
    MD's first step is the start, not the relaxation's."""
    atoms = cu_cluster(13)
    check = ConservationCheck({}, "nve")
    forces = np.zeros((13, 3))
    for _ in range(3):
        assert check.observe(atoms, forces)[0]["momentum"] == 0.0
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    row, flags = check.observe(atoms, forces)
    assert row["momentum"] == 0.0 and row["angular_momentum"] == 0.0 and flags == []
    atoms.set_momenta(atoms.get_momenta() * 1.5)  # now a change is a change
    assert check.observe(atoms, forces)[0]["momentum"] > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("ensemble, temperature", [("nve", 300), ("langevin", 900)])
def test_no_false_alarm_with_conservative_forces_or_project(ensemble, temperature):
    """Conservative forces of an energy that is not rotation invariant (a
    lab-frame term, as in every unconstrained model: a net torque, logged
    but bounded in its work) and projected direct forces run 0.6 ps without
    a conservation flag; the Langevin bath moves the momentum on its thermal
    scale without one either."""
    cluster = cu_cluster(38)
    conservative = morse_direct_callable(anisotropy=0.02, conservative=True)
    runs = {
        "conservative": dict(model=conservative, nc=False),
        "project": dict(model=morse_direct_callable(), mode="project"),
    }
    for name, kwargs in runs.items():
        monitor, trace = md(
            atoms=cluster,
            steps=600,
            ensemble=ensemble,
            temperature=temperature,
            seed=5,
            every=100,
            **kwargs,
        )
        conservation_flags = set(first_flags(monitor)) & set(conservation.METRICS)
        assert not conservation_flags, (name, first_flags(monitor))
        torque = max(row["net_torque"] for row in monitor.history)
        assert (torque > 1e-3) if name == "conservative" else (torque < 1e-12)
        if ensemble == "langevin":  # the bath does move the momentum
            p = np.array([t[0] for t in trace])
            assert np.abs(p - p[0]).max() > 1.0


@pytest.mark.heavy  # minutes-long check: outside CI's budget (README, Test)
@pytest.mark.slow
def test_no_false_alarm_with_the_shipped_unconstrained_cluster_model():
    """A real unconstrained model (the shipped cluster PET, conservative
    forces): its energy is not exactly rotation invariant, so the forces carry
    a net torque, which is logged; the angular momentum it exchanges stays far
    below kT/2 in NVE, and nothing is flagged in NVE or at 900 K."""
    from symmd.models import shipped_model

    model = shipped_model("pet-emt-cu-cluster")
    for ensemble, temperature in (("nve", 300.0), ("langevin", 900.0)):
        monitor, trace = md(
            model,
            cu_cluster(19),
            300,
            ensemble=ensemble,
            temperature=temperature,
            nc=False,
            every=50,
            seed=2,
        )
        flags = set(first_flags(monitor)) & set(conservation.METRICS)
        assert not flags, (ensemble, first_flags(monitor))
        assert max(row["net_torque"] for row in monitor.history) > 1e-4
        if ensemble == "nve":
            assert max(row["angular_momentum"] for row in monitor.history) < 0.5
