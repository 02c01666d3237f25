"""Adaptive symmetrization on a run pushed out of the model's domain.

The shipped PET is trained near equilibrium; at 5000 K it is far outside its
training data. In "adaptive" mode the calculator runs the raw model until the
monitor flags a step, then switches to O(3) averaging (logged), and backs off
again after calm checks.

    python examples/adaptive_md.py              # ~1.5 min
"""

import os
import warnings

import ase.build
import numpy as np
from ase import units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from symmd import Monitor, SymmetryCalculator, models

steps = int(os.environ.get("SYMMD_EXAMPLE_STEPS", 400))
atoms = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 2, 2)
rng = np.random.default_rng(0)
atoms.numbers[rng.random(len(atoms)) < 0.3] = 13

monitor = Monitor(
    every=5, action="symmetrize", log="adaptive_md.csv", seed=0, back_off=True, timestep=2.0
)
calc = SymmetryCalculator(
    models.shipped_model(), symmetrize="adaptive", quadrature=2, monitor=monitor
)
atoms.calc = calc
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    MaxwellBoltzmannDistribution(atoms, temperature_K=5000, rng=rng)
    Langevin(atoms, 2 * units.fs, temperature_K=5000, friction=0.02, rng=rng).run(steps)
print(f"{steps} steps, final mode {calc.mode}, {len(monitor.events)} flagged checks")
for switch in calc.switches:
    print(f"  call {switch['call']}: {switch['from']} -> {switch['to']} ({switch['reason']})")
print("log: adaptive_md.csv")
