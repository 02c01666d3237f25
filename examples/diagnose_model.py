"""Equivariance error and character spectrum of the shipped PET.

    python examples/diagnose_model.py           # ~30 s, writes diagnose_model.png/.json
"""

import os

import ase.build
import numpy as np

from symmd import diagnose, models

frames = []
quick = bool(os.environ.get("SYMMD_EXAMPLE_QUICK"))
for seed in range(2):
    atoms = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 2, 2)
    rng = np.random.default_rng(seed)
    atoms.numbers[rng.random(len(atoms)) < 0.3] = 13
    atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
    frames.append(atoms)

result = diagnose(models.shipped_model(), frames, max_lambda=1 if quick else 3)
print(result.table())
result.to_json("diagnose_model.json")
result.plot("diagnose_model.png")
print("wrote diagnose_model.json and diagnose_model.png")
