"""The exported model inside i-PI: the test starts the i-PI server and
``i-pi-py_driver -m metatomic`` on a UNIX socket in a temporary directory,
runs NVE, and ends both processes whatever happens."""

import os
import shutil
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import torch

import symmd
from symmd.cli import default_structure
from symmd.models import shipped_model

pytest.importorskip("ipi")
metatomic_ase = pytest.importorskip("metatomic_ase")
pytestmark = pytest.mark.slow

PET = shipped_model("pet-emt-cual")
TIMEOUT = 240  # seconds per i-PI run

INPUT = """<simulation verbosity="low" safe_stride="1000" sockets_prefix="{prefix}">
  <output prefix="sim">
    <properties stride="1" filename="out">[step, conserved{{electronvolt}}, potential{{electronvolt}}]</properties>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>31415</seed></prng>
  <ffsocket name="driver" mode="unix" pbc="false">
    <address>{address}</address>
    <latency>1e-4</latency>
  </ffsocket>
  <system>
    <initialize nbeads="1">
      <file mode="ase">init.xyz</file>
      <velocities mode="thermal" units="kelvin">600</velocities>
    </initialize>
    <forces><force forcefield="driver"/></forces>
    <ensemble><temperature units="kelvin">600</temperature></ensemble>
    <motion mode="dynamics">
      <dynamics mode="nve"><timestep units="femtosecond">2.0</timestep></dynamics>
    </motion>
  </system>
</simulation>
"""


def _tool(name):
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.path.exists(path) else shutil.which(name)


# i-pi-py_driver, with i-PI's message verbosity at "medium": the metatomic
# driver prints its uncertainty warning only from that level on, and the
# command has no option for it
DRIVER = f"""
import runpy
from ipi.utils.messages import verbosity
verbosity.level = "medium"
runpy.run_path({_tool("i-pi-py_driver")!r}, run_name="__main__")
"""


def run_ipi(folder, model, steps, uncertainty_threshold=None):
    """NVE with i-PI and the metatomic driver; returns (conserved [eV] per
    step, driver output). Both processes are ended in every outcome."""
    folder.mkdir()
    default_structure().write(folder / "init.xyz")
    address = f"symmd-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    prefix = f"{folder}/"
    (folder / "input.xml").write_text(INPUT.format(prefix=prefix, address=address, steps=steps))
    options = f"template=init.xyz,model={model}"
    if uncertainty_threshold is not None:
        options += f",uncertainty_threshold={uncertainty_threshold}"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    server = driver = None
    try:
        server = subprocess.Popen(
            [_tool("i-pi"), "input.xml"],
            cwd=folder,
            env=env,
            stdout=open(folder / "server.log", "w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while not os.path.exists(prefix + address):
            assert server.poll() is None, (folder / "server.log").read_text()
            assert time.monotonic() < deadline, "i-PI did not open its socket"
            time.sleep(0.2)
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER, "-u", "-S", prefix, "-a", address, "-m", "metatomic"]
            + ["-o", options],
            cwd=folder,
            env=env,
            stdout=open(folder / "driver.log", "w"),
            stderr=subprocess.STDOUT,
        )
        server.wait(timeout=TIMEOUT)
        driver.wait(timeout=30)
    finally:
        for process in (driver, server):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    log = (folder / "driver.log").read_text()
    assert server.returncode == 0, (folder / "server.log").read_text() + log
    data = np.loadtxt(folder / "sim.out", ndmin=2)
    assert len(data) >= steps, log
    return data[:, 1], log


def drift(conserved):
    return float(np.abs(conserved - conserved[0]).max())


@pytest.mark.heavy  # minutes-long check: outside CI's budget (README, Test)
def test_nve_and_uncertainty_in_ipi(tmp_path):
    steps = 20
    path = tmp_path / "avg.pt"
    symmd.export(PET, path, quadrature=2, monitor_every=10, rotations=16, uncertainty=True, seed=7)
    # the first call of the engine draws with seed + 0: measure that value
    from metatomic.torch import ModelOutput

    calc = metatomic_ase.MetatomicCalculator(path, uncertainty_threshold=None)
    out = calc.run_model(
        default_structure(), {"energy_uncertainty": ModelOutput(sample_kind="atom")}
    )
    measured = float(out["energy_uncertainty"].block().values.max())
    assert measured > 0

    raw, _ = run_ipi(tmp_path / "raw", PET, steps)
    averaged, quiet = run_ipi(tmp_path / "avg", path, steps, 3 * measured)
    assert drift(averaged) <= max(1.5 * drift(raw), 1e-4), (drift(averaged), drift(raw))
    assert "exceeds the selected threshold" not in quiet
    _, loud = run_ipi(tmp_path / "low", path, 2, 0.3 * measured)
    assert "exceeds the selected threshold" in loud


def test_lora_finetuned_model_in_ipi(tmp_path, pet_checkpoint):
    """A LoRA fine-tuned checkpoint exports (adapters merged) to a plain
    metatomic model that i-PI's metatomic driver runs; its first potential
    energy is that of metatomic-ase and of the eager fine-tuned model."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from helpers import cu_cluster

    from symmd.models import evaluate_rotated, load

    frames = []
    for seed in range(2):
        atoms = cu_cluster(8, seed=seed)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    result = symmd.finetune(
        pet_checkpoint, frames, gamma=10.0, trainable="lora", rank=2, epochs=2, lr=1e-2,
        batch_size=2, degree=2, out=tmp_path / "tuned", progress=False,
    )  # fmt: skip
    model = str(result.paths["model"])
    structure = default_structure()
    eager = float(evaluate_rotated(load(result.model), structure, torch.eye(3))["energy"][0])
    untuned = float(evaluate_rotated(load(pet_checkpoint), structure, torch.eye(3))["energy"][0])
    assert abs(eager - untuned) > 1e-4  # the adapters changed the model
    atoms = structure.copy()
    atoms.calc = metatomic_ase.MetatomicCalculator(model)
    assert atoms.get_potential_energy() == pytest.approx(eager, rel=1e-5, abs=1e-5)
    run_ipi(tmp_path / "ipi", model, 3)
    potential = np.loadtxt(tmp_path / "ipi" / "sim.out", ndmin=2)[0, 2]
    assert potential == pytest.approx(eager, rel=1e-5, abs=1e-5)


def test_mts_with_projected_direct_forces_and_a_conservative_correction(tmp_path):
    """i-PI's multiple time stepping with two symmd-exported models, each served
    by its own metatomic driver: projected direct forces in the 4 inner steps
    (1 fs), the conservative correction in the outer step (4 fs). A cluster
    in the vacuum box i-PI requires: the exported projection removes the net
    force and the torque (no neighbour pair crosses the box), so momentum and
    angular momentum are conserved to the output's precision; the outer
    correction keeps the conserved quantity of the conservative energy, where
    the same projected direct forces alone heat the cluster."""
    import pathlib

    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet
    from helpers import cu_cluster
    from toy_models import morse_direct

    from symmd.conservation import rigid_body

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "benchmarks"))
    import ipi_mts

    direct, conservative = tmp_path / "direct.pt", tmp_path / "conservative.pt"
    symmd.export(morse_direct(), direct, symmetrize="project")
    symmd.export(morse_direct(), conservative, symmetrize="none")
    atoms = cu_cluster(38)
    atoms.center(vacuum=8.0)
    atoms.pbc = True
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    steps = 50
    out = ipi_mts.run_mts(
        tmp_path / "mts", atoms, direct, conservative, steps=steps, outer_fs=4.0, inner=4
    )
    assert len(out["conserved"]) == steps + 1
    masses = atoms.get_masses()
    states = [rigid_body(r, p, masses) for r, p in zip(out["positions"], out["momenta"])]
    thermal = np.sqrt(masses.sum() * units.kB * 300)
    np.testing.assert_allclose(states[0]["P"], atoms.get_momenta().sum(0), atol=1e-6)
    assert max(np.abs(s["P"] - states[0]["P"]).max() for s in states) < 1e-6 * thermal
    assert max(np.abs(s["L"] - states[0]["L"]).max() for s in states) < 1e-5
    mts_drift = np.abs(out["conserved"] - out["conserved"][0]).max() / len(atoms)

    # the same 200 fs with the projected direct forces alone (ASE, 1 fs)
    alone = atoms.copy()
    alone.calc = symmd.SymmetryCalculator(
        morse_direct(), symmetrize="project", non_conservative=True
    )
    totals = []
    dyn = VelocityVerlet(alone, units.fs)
    dyn.attach(lambda: totals.append(alone.get_total_energy()), interval=1)
    dyn.run(4 * steps)
    direct_drift = np.abs(np.array(totals) - totals[0]).max() / len(atoms)
    assert mts_drift < 1e-4 < direct_drift / 10, (mts_drift, direct_drift)
