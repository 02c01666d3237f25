import csv
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import torch
from ase import units
from ase.data import covalent_radii
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from helpers import cu_cluster, cual_cell
from toy_models import lab_frame_callable

from symmd import (
    InstabilityError,
    InstabilityWarning,
    Monitor,
    SymmetryCalculator,
    metrics,
    models,
    o3,
)
from symmd.metrics import sample_error
from symmd.monitor import LOG_FIELDS
from symmd.o3 import random_o3


@pytest.fixture(scope="module")
def pet():
    return models.load(models.shipped_model("pet-emt-cual"))


@pytest.mark.heavy  # minutes-long check: outside CI's budget (README, Test)
@pytest.mark.slow
def test_monitor_estimate_is_unbiased_over_200_seeds(pet):
    atoms = cual_cell(seed=11)
    reference_q = o3.quadrature(9)
    ref = models.evaluate_rotated(models.load(pet), atoms, reference_q, ("forces",), batch_size=96)[
        "forces"
    ]
    a2_full = float((metrics.equivariance_error(ref, reference_q, "vector") ** 2).mean())
    draws = [random_o3(2, np.random.default_rng(seed)) for seed in range(200)]
    all_rot = torch.cat([q.rotations for q in draws])
    u = models.evaluate_rotated(models.load(pet), atoms, all_rot, ("forces",), batch_size=100)[
        "forces"
    ]
    estimates = np.array(
        [
            float(sample_error(u[2 * s : 2 * s + 2], q, "vector")[0].mean())
            for s, q in enumerate(draws)
        ]
    )
    stderr = estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert abs(estimates.mean() - a2_full) < 3 * stderr
    assert a2_full > 1e-5  # the model is measurably non-equivariant


def test_sample_error_is_exact_for_two_draws_of_a_known_response():
    q = random_o3(2, np.random.default_rng(0))
    v = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)
    u = v.expand(2, 3)  # constant lab-frame vector: z_j = v R_j
    a2, se = sample_error(u, q, "vector")
    z = metrics.back_transform(u, q, "vector")
    assert torch.allclose(a2, ((z[0] - z[1]) ** 2).sum() / 2)
    assert torch.allclose(se, a2 * (2 / 3) ** 0.5)
    with pytest.raises(
        ValueError, match="^an unbiased estimate needs at least 2 rotations, got 1$"
    ):
        sample_error(u[:1], random_o3(1, np.random.default_rng(0)), "vector")


def langevin(atoms, calc, temperature, seed, dt=2.0):
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    atoms.calc = calc
    return Langevin(
        atoms,
        dt * units.fs,
        temperature_K=temperature,
        friction=0.02,
        rng=np.random.default_rng(seed),
    )


@pytest.mark.heavy  # minutes-long check: outside CI's budget (README, Test)
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_stable_run_raises_no_flag_with_defaults(pet, seed):
    atoms = cual_cell(rattle=0.02, seed=seed)
    monitor = Monitor(seed=seed)
    dyn = langevin(atoms, SymmetryCalculator(pet, monitor=monitor), 300, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InstabilityWarning)
        dyn.run(500)
    assert monitor.events == []
    assert len(monitor.history) == 51 and [r["step"] for r in monitor.history[:3]] == [0, 10, 20]
    rel = [r["rel_forces"] for r in monitor.history]
    # the README's "A_F/F about 2%" at 300 K
    assert 0.012 < np.median(rel) < 0.035 and max(rel) < 0.06


def overlap(atoms):
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    r = covalent_radii[atoms.numbers]
    return (d / (r[:, None] + r[None])).min() < 0.4


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unstable_run_is_stopped_before_atoms_overlap(pet, seed, tmp_path):
    atoms = cual_cell(rattle=0.02, seed=seed)
    log = tmp_path / "md.csv"
    monitor = Monitor(action="raise", log=log, seed=seed)
    dyn = langevin(atoms, SymmetryCalculator(pet, monitor=monitor), 20000, seed)
    with pytest.raises(InstabilityError) as info:
        dyn.run(300)
    assert re.match(
        rf"^step {info.value.step}: \w+ = \S+ (A is a collision: \S+ x the sum of covalent "
        r"radii, below the limit 0.6|exceeds its limit)",
        str(info.value),
    )
    assert np.isfinite(atoms.positions).all() and not overlap(atoms)
    good = __import__("ase.io").io.read(f"{log}.last_good.extxyz")
    assert len(good) == len(atoms) and not overlap(good)
    rows = list(csv.DictReader(open(log)))
    assert rows[-1]["flags"] and int(rows[-1]["step"]) == info.value.step


def test_adaptive_switches_to_average_and_logs_it(tmp_path):
    log = tmp_path / "adaptive.csv"
    monitor = Monitor(every=1, threshold={"rel_forces": 1e-6}, log=log, seed=0)
    calc = SymmetryCalculator(
        lab_frame_callable, symmetrize="adaptive", quadrature=3, monitor=monitor
    )
    # adaptive adapts whatever the monitor's action; the action ("warn") still runs
    assert monitor.action == "warn" and calc.mode == "none"
    atoms = cu_cluster(8)
    atoms.calc = calc
    with pytest.warns(
        InstabilityWarning, match=r"^step 0: rel_forces = \S+ exceeds its limit 1e-06$"
    ):
        forces = atoms.get_forces()
    averaged = SymmetryCalculator(lab_frame_callable, symmetrize="average", quadrature=3)
    atoms2 = atoms.copy()
    atoms2.calc = averaged
    assert calc.mode == "average" and np.allclose(forces, atoms2.get_forces(), atol=1e-12)
    assert calc.switches == [
        {"call": 1, "from": "none", "to": "average", "reason": monitor.events[0]["message"]}
    ]
    rows = list(csv.DictReader(open(log)))
    assert any(r["flags"] == "switch:none->average" for r in rows)


def test_adaptive_default_monitor_symmetrizes_and_backs_off():
    calc = SymmetryCalculator(lab_frame_callable, symmetrize="adaptive")
    assert isinstance(calc.monitor, Monitor) and calc.monitor.action == "warn"
    monitor = Monitor(
        every=1, threshold=1e-6, action="symmetrize", back_off=True, patience=2, seed=0
    )
    calc = SymmetryCalculator(
        lab_frame_callable, symmetrize="adaptive", quadrature=3, monitor=monitor
    )
    monitor.thresholds["rel_forces"] = 1e-6
    atoms = cu_cluster(8)
    atoms.calc = calc
    atoms.get_forces()
    assert calc.mode == "average"
    monitor.thresholds["rel_forces"] = 100.0  # now everything is calm
    for _k in range(3):
        atoms.positions[0, 0] += 0.01
        atoms.get_forces()
    assert calc.mode == "none" and [s["to"] for s in calc.switches] == ["average", "none"]


def test_callable_action_and_determinism():
    def run():
        seen = []
        monitor = Monitor(
            every=2, threshold=1e-6, action=lambda m, event: seen.append(event["step"]), seed=3
        )
        atoms = cu_cluster(7)
        atoms.calc = SymmetryCalculator(lab_frame_callable, monitor=monitor)
        for _ in range(5):
            atoms.positions[1] += 0.01
            atoms.get_forces()
        return seen, [r["a2_forces"] for r in monitor.history]

    first, second = run(), run()
    assert first[0] == [0, 2, 4] and first == second


@pytest.mark.slow
def test_log_survives_an_interrupted_run(tmp_path):
    log = tmp_path / "killed.csv"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
        from helpers import cu_cluster
        from toy_models import lab_frame_callable
        from ase.md.verlet import VelocityVerlet
        from ase import units
        from symmd import Monitor, SymmetryCalculator
        atoms = cu_cluster(6)
        atoms.calc = SymmetryCalculator(lab_frame_callable, monitor=Monitor(every=1, log={str(log)!r}, seed=0))
        VelocityVerlet(atoms, 0.5 * units.fs).run(10**9)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 120
        while time.time() < deadline and (not log.exists() or log.read_text().count("\n") < 20):
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    lines = log.read_text().splitlines()
    assert lines[0].split(",") == LOG_FIELDS and len(lines) > 20
    rows = list(csv.reader(lines[1:]))
    assert all(len(r) == len(LOG_FIELDS) for r in rows)
    assert [int(r[0]) for r in rows] == list(range(len(rows)))


def test_monitor_argument_errors():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "rotations must be an int >= 2 (an unbiased variance needs two draws), got 1"
        ),
    ):
        Monitor(rotations=1)
    with pytest.raises(
        ValueError,
        match=re.escape("every must be a non-negative int (0: physical checks only), got -1"),
    ):
        Monitor(every=-1)
    with pytest.raises(
        ValueError,
        match=re.escape("action must be 'warn', 'raise', 'symmetrize' or a callable, got 'stop'"),
    ):
        Monitor(action="stop")


class _Counted:
    """A callable model that counts its batched calls and the copies in each."""

    def __init__(self):
        self.copies: list[int] = []

    def __call__(self, positions, types, cell, pbc, system_index):
        self.copies.append(int(cell.shape[0]))
        return lab_frame_callable(positions, types, cell, pbc, system_index)


@pytest.mark.parametrize("mode", ["none", "average"])
def test_checked_steps_evaluate_the_draws_in_the_step_batch(mode):
    model = _Counted()
    monitor = Monitor(every=2, rotations=3, seed=5)
    calc = SymmetryCalculator(model, symmetrize=mode, quadrature=2, monitor=monitor)
    plain = SymmetryCalculator(lab_frame_callable, symmetrize=mode, quadrature=2)
    atoms = cu_cluster(6)
    own = len(calc.quadrature) if mode == "average" else 1
    rng = np.random.default_rng(5)  # the monitor's generator: its draws, in order
    for step in range(4):
        atoms.positions[step] += 0.05
        calc.calculate(atoms.copy(), ["forces"])
        # one model call per step; checked steps (0, 2) carry the 3 draws in it
        assert model.copies[-1] == own + (3 if step % 2 == 0 else 0)
        plain.calculate(atoms.copy(), ["forces"])
        for key in ("energy", "forces"):  # the step's own result is unchanged
            np.testing.assert_allclose(calc.results[key], plain.results[key], rtol=0, atol=1e-12)
        if step % 2:
            continue
        q = random_o3(3, rng)
        out = models.evaluate_rotated(models.load(lab_frame_callable), atoms, q, ["forces"])
        a2, _ = sample_error(out["forces"], q, "vector")
        row = monitor.history[-1]
        assert row["step"] == step
        assert row["a2_forces"] == pytest.approx(float(a2.mean()), rel=1e-10)
    assert len(model.copies) == 4


def test_monitor_refuses_draws_of_another_step():
    monitor = Monitor(every=1, seed=0)
    calc = SymmetryCalculator(lab_frame_callable, monitor=monitor)
    atoms = cu_cluster(6)
    atoms.calc = calc
    atoms.get_forces()
    draws = monitor.draws(calc)  # made for step 0, which was already checked
    calc.n_calls += 1
    with pytest.raises(
        ValueError,
        match=re.escape(
            "draws were made for step 0, not for the step checked (1); ask "
            "Monitor.draws(calc) after counting the evaluation"
        ),
    ):
        monitor.check(calc, atoms, ("energy", "forces"), draws)
    # without draws the check evaluates its own, in one more call
    obs = monitor.check(calc, atoms, ("energy", "forces"))
    assert obs.row["step"] == 1 and obs.row["a2_forces"] > 0
