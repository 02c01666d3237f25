"""Geometry optimization of a symmetric crystal, raw versus symmetrized.

An unconstrained model breaks the cubic symmetry of an ordered Cu3Al (L1_2)
crystal slightly: the raw forces on a perfect lattice are not exactly zero and
the stress is not exactly isotropic. Averaging over the smallest exact O(3)
quadrature restores both, so a relaxation keeps the symmetry.

    python examples/symmetric_relaxation.py     # ~20 s
"""

import os

import ase.build
import numpy as np
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from symmd import SymmetryCalculator, models

model = models.load(models.shipped_model())
base = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True)
base.numbers[0] = 13  # L1_2 Cu3Al: Al on the corner site
base = base * (2, 2, 2)

for mode in ("none", "average"):
    atoms = base.copy()
    atoms.calc = SymmetryCalculator(model, symmetrize=mode, quadrature=3)
    f0 = np.abs(atoms.get_forces()).max()
    s0 = atoms.get_stress()
    BFGS(FrechetCellFilter(atoms), logfile=None).run(
        fmax=1e-3, steps=3 if os.environ.get("SYMMD_EXAMPLE_QUICK") else 100
    )
    lengths = atoms.cell.cellpar()
    print(
        f"{mode:>8}: max |F| on the perfect lattice {f0:.2e} eV/A, shear stress "
        f"{np.abs(s0[3:]).max():.2e} eV/A^3; relaxed cell {lengths[:3].round(5)} "
        f"angles {lengths[3:].round(4)}, anisotropy {np.ptp(lengths[:3]):.2e} A"
    )
