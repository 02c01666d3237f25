"""Equivariance error and character spectrum of the shipped PET, and the
smallest quadrature that restores its symmetry to a tolerance.

    python examples/diagnose_model.py [--out DIR]   # writes DIR/diagnose_model.png/.json

The spectrum covers energy, forces, stress and the outputs the model declares
(PET's internal ``feature``; metatrain's ``mtt::aux::*`` outputs such as the
last-layer features only when asked for by name); the table ends with the
twirl residual predicted for each small rule.
"""

import argparse
import os
import pathlib

import ase.build
import numpy as np

from symmd import diagnose, models, recommend_quadrature


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


out = output_dir()

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
result.to_json(out / "diagnose_model.json")
result.plot(out / "diagnose_model.png")
print(f"wrote {out / 'diagnose_model.json'} and {out / 'diagnose_model.png'}")

# the minimum bias: the smallest rule whose force residual is below 1e-4 eV/A
print(recommend_quadrature(model, frames[0], 1e-2 if quick else 1e-4))
