"""Adaptive symmetrization on a run pushed out of the model's domain.

The shipped PET is trained near equilibrium; at 5000 K it is far outside its
training data. In "adaptive" mode the calculator runs the raw model until the
monitor flags a step, then switches to O(3) averaging (logged), and backs off
again after calm checks. A flag that persists while averaging (atoms
colliding: the model, not its symmetry, is wrong there) stops the run, with
the reason and the last good frame.

    python examples/adaptive_md.py [--out DIR]  # writes DIR/adaptive_md.csv
"""

import argparse
import os
import pathlib

import ase.build
import numpy as np
from ase import units
from ase.md.langevin import Langevin

from symmd import InstabilityError, Monitor, SymmetryCalculator, models


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

steps = int(os.environ.get("SYMMD_EXAMPLE_STEPS", 400))
atoms = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 2, 2)
rng = np.random.default_rng(0)
atoms.numbers[rng.random(len(atoms)) < 0.3] = 13

# the first flag (A_F/F above 4x its baseline, or a physical check) switches
# to averaging; action="raise" stops the run if a flag persists while averaging
# (a collision is not a symmetry problem)
monitor = Monitor(
    every=5,
    action="raise",
    log=out / "adaptive_md.csv",
    seed=0,
    back_off=True,
    timestep=2.0,
)
calc = SymmetryCalculator(
    models.shipped_model(), symmetrize="adaptive", quadrature=2, monitor=monitor
)
atoms.calc = calc
thermalize(atoms, 5000, rng)
dyn = Langevin(
    atoms, 2 * units.fs, temperature_K=5000, friction=0.02 / units.fs, fixcm=False, rng=rng
)
try:
    dyn.run(steps)
    print(f"{steps} steps done, final mode {calc.mode}")
except InstabilityError as error:
    print(
        f"stopped: {error}; {error.metric} persists while averaging, which symmetry "
        f"cannot cure; last good frame: {error.last_good}"
    )
print(f"{len(monitor.events)} flagged checks, {len(calc.switches)} mode switches")
for switch in calc.switches:
    print(f"  call {switch['call']}: {switch['from']} -> {switch['to']} ({switch['reason']})")
print(f"log: {monitor.log}")
