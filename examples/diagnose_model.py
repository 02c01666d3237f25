"""Equivariance error and character spectrum of the shipped PET, and the
smallest quadrature that restores its symmetry to a tolerance.

    python examples/diagnose_model.py      # ~40 s, writes diagnose_model.png/.json

The spectrum covers energy, forces, stress and the outputs the model declares
(PET's internal ``feature`` and last-layer features); the table ends with the
twirl residual predicted for each small rule.
"""

import os

import ase.build
import numpy as np

from symmd import diagnose, models, recommend_quadrature

frames = []
quick = bool(os.environ.get("SYMMD_EXAMPLE_QUICK"))
for seed in range(2):
    atoms = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 2, 2)
    rng = np.random.default_rng(seed)
    atoms.numbers[rng.random(len(atoms)) < 0.3] = 13
    atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
    frames.append(atoms)

model = models.load(models.shipped_model())
result = diagnose(model, frames, max_lambda=1 if quick else 3)
print(result.table())
result.to_json("diagnose_model.json")
result.plot("diagnose_model.png")
print("wrote diagnose_model.json and diagnose_model.png")

# the minimum bias: the smallest rule whose force residual is below 1e-4 eV/A
print(recommend_quadrature(model, frames[0], 1e-2 if quick else 1e-4))
