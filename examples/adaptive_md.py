"""Adaptive symmetrization on a run pushed out of the model's domain.

The shipped PET is trained near equilibrium; at 5000 K it is far outside its
training data. In "adaptive" mode the calculator runs the raw model until the
monitor flags a step, then switches to O(3) averaging (logged), and backs off
again after calm checks. A flag that persists while averaging (atoms
colliding: the model, not its symmetry, is wrong there) stops the run, with
the reason and the last good frame.

    python examples/adaptive_md.py [--out DIR]  # writes DIR/adaptive_md.csv
"""

import os

import numpy as np
from _common import output_dir, thermalize
from ase import units
from ase.md.langevin import Langevin

from symmd import InstabilityError, Monitor, SymmetryCalculator, models

out = output_dir(__doc__.splitlines()[0])

steps = int(os.environ.get("SYMMD_EXAMPLE_STEPS", 400))
atoms = models.cual_cell()  # 32-atom fcc Cu/Al, 30% Al
rng = np.random.default_rng(0)

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
