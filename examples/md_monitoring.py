"""Langevin MD of a Cu/Al alloy with the shipped PET, monitored by symmd.

Every 10 steps the monitor measures the equivariance error from two extra
Haar-random rotations (one batched call) and checks distances, forces and
temperature; the CSV log is flushed row by row.

    python examples/md_monitoring.py [--out DIR]   # 500 steps; writes DIR/md_monitoring.csv
"""

import argparse
import os
import pathlib

import ase.build
import numpy as np
from ase import units
from ase.md.langevin import Langevin

from symmd import Monitor, SymmetryCalculator, models


def output_dir() -> pathlib.Path:
    """``--out DIR`` (default ``examples/output/``, ignored by git), created."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(__file__).resolve().parent / "output",
        help="directory for the files this example writes (default examples/output/)",
    )
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    return out


def thermalize(atoms, temperature_K, rng):
    """Maxwell-Boltzmann momenta (``thermalize_momenta`` from ASE 3.29 on)."""
    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # older ASE
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
        return
    thermalize_momenta(atoms, temperature_K, rng=rng)


out = output_dir()

steps = int(os.environ.get("SYMMD_EXAMPLE_STEPS", 500))
atoms = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 2, 2)
rng = np.random.default_rng(0)
atoms.numbers[rng.random(len(atoms)) < 0.3] = 13

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
