"""Langevin MD of a Cu/Al alloy with the shipped PET, monitored by symmd.

Every 10 steps the monitor measures the equivariance error from two extra
Haar-random rotations (one batched call) and checks distances, forces and
temperature; the CSV log is flushed row by row.

    python examples/md_monitoring.py [--out DIR]   # 500 steps; writes DIR/md_monitoring.csv
"""

import os

import numpy as np
from _common import output_dir, thermalize
from ase import units
from ase.md.langevin import Langevin

from symmd import Monitor, SymmetryCalculator, models

out = output_dir(__doc__.splitlines()[0])

steps = int(os.environ.get("SYMMD_EXAMPLE_STEPS", 500))
atoms = models.cual_cell()  # 32-atom fcc Cu/Al, 30% Al
rng = np.random.default_rng(0)

monitor = Monitor(every=10, rotations=2, log=out / "md_monitoring.csv", seed=0, timestep=2.0)
atoms.calc = SymmetryCalculator(models.shipped_model(), monitor=monitor)
thermalize(atoms, 300, rng)
# friction 0.02 1/fs (ASE takes it in its own time unit)
Langevin(
    atoms, 2 * units.fs, temperature_K=300, friction=0.02 / units.fs, fixcm=False, rng=rng
).run(steps)

rel = [row["rel_forces"] for row in monitor.history]
print(f"{steps} steps, {len(monitor.history)} checks, {len(monitor.events)} flags")
print(
    f"relative force equivariance error A_F/F: median {np.median(rel):.3e}, max {np.max(rel):.3e}"
)
print(f"log: {monitor.log} (plot it with: symmd plot {monitor.log} -o md.png)")
