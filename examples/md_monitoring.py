"""Langevin MD of a Cu/Al alloy with the shipped PET, monitored by symmd.

Every 10 steps the monitor measures the equivariance error from two extra
Haar-random rotations (one batched call) and checks distances, forces and
temperature; the CSV log is flushed row by row.

    python examples/md_monitoring.py            # 500 steps, ~1 min on 2 cores
"""

import os

import ase.build
import numpy as np
from ase import units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from symmd import Monitor, SymmetryCalculator, models

steps = int(os.environ.get("SYMMD_EXAMPLE_STEPS", 500))
atoms = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 2, 2)
rng = np.random.default_rng(0)
atoms.numbers[rng.random(len(atoms)) < 0.3] = 13

monitor = Monitor(every=10, rotations=2, log="md_monitoring.csv", seed=0, timestep=2.0)
atoms.calc = SymmetryCalculator(models.shipped_model(), monitor=monitor)
MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=rng)
Langevin(atoms, 2 * units.fs, temperature_K=300, friction=0.02, rng=rng).run(steps)

rel = [row["rel_forces"] for row in monitor.history]
print(f"{steps} steps, {len(monitor.history)} checks, {len(monitor.events)} flags")
print(
    f"relative force equivariance error A_F/F: median {np.median(rel):.3e}, max {np.max(rel):.3e}"
)
print("log: md_monitoring.csv (plot it with: symmd plot md_monitoring.csv -o md.png)")
