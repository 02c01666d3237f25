"""Phonons of fcc Cu: raw model, space-group projection, O(3) average.

ASE's finite-displacement phonons (``ase.phonons.Phonons``) on a 4x4x4
supercell of the primitive fcc cell (64 atoms; X is commensurate with an even
supercell, so the cubic symmetry of the dynamical matrix there is not broken
by the Fourier interpolation), with the shipped PET model three ways:

* raw: the unconstrained model as it is;
* projected: ``space_group=True``, no averaging: forces of every (displaced)
  supercell projected onto its own space group, zero extra model calls;
* averaged: the twirl over ``quadrature(4)``, plus the same projection.

Cubic symmetry makes the three acoustic modes at Gamma vanish and the two
transverse modes at X degenerate. The script prints the frequencies at Gamma
and X (no acoustic sum rule imposed) and the TA splitting at X for each.
What it shows: the averaged model is equivariant, so its force constants have
the crystal's symmetry and the TA pair at X is degenerate up to the
quadrature's residual. The projection constrains each displaced supercell
only by its own, smaller group (C4v about the displacement), which does not
relate the x and y displacements: it shrinks the TA splitting but cannot close
it, and since projected forces are not the gradient of one energy, ASE's
transposition symmetrization of the force constants can move the Gamma
acoustic modes off zero. Force-cache files go to a temporary directory.

    python examples/phonons.py     # ~1 min
"""

import os
import tempfile

import ase.build
import numpy as np
from ase.phonons import Phonons

from symmd import SymmetryCalculator, models

quick = bool(os.environ.get("SYMMD_EXAMPLE_QUICK"))
model = models.load(models.shipped_model())
atoms = ase.build.bulk("Cu", "fcc", a=3.61)  # 1 atom, primitive
n = 2 if quick else 4
path = atoms.cell.bandpath("GX", npoints=2)
setups = {
    "raw": {},
    "projected": {"space_group": True},
    "averaged": {"symmetrize": "average", "quadrature": 4, "space_group": True},
}
print(f"fcc Cu, {n}x{n}x{n} supercell ({n**3} atoms), frequencies in meV")
print(f"{'model':>10} {'Gamma':>24} {'X':>24} {'TA split at X':>14}")
with tempfile.TemporaryDirectory() as tmp:
    for label, options in setups.items():
        calc = SymmetryCalculator(model, **options)
        ph = Phonons(atoms, calc, supercell=(n, n, n), delta=0.02, name=f"{tmp}/{label}")
        ph.run()
        ph.read(acoustic=False)
        freqs = 1e3 * ph.band_structure(path.kpts).real  # eV -> meV, [2, 3]
        gamma, x = np.sort(freqs[0]), np.sort(freqs[-1])
        print(
            f"{label:>10} {np.array2string(gamma, precision=3):>24} "
            f"{np.array2string(x, precision=3):>24} {x[1] - x[0]:>14.2e}"
        )
