"""Equivariance error and character spectrum of the shipped PET, and the
smallest quadrature that restores its symmetry to a tolerance.

    python examples/diagnose_model.py [--out DIR]   # writes DIR/diagnose_model.png/.json

The spectrum covers energy, forces, stress and the outputs the model declares
(PET's internal ``feature``; metatrain's ``mtt::aux::*`` outputs such as the
last-layer features only when asked for by name); the table ends with the
twirl residual predicted for each small rule.
"""

import os

from _common import output_dir

from symmd import diagnose, models, recommend_quadrature

out = output_dir(__doc__.splitlines()[0])

quick = bool(os.environ.get("SYMMD_EXAMPLE_QUICK"))
frames = [models.cual_cell(seed=seed, rattle=0.08) for seed in range(2)]

model = models.load(models.shipped_model())
result = diagnose(model, frames, max_lambda=1 if quick else 3)
print(result.table())
result.to_json(out / "diagnose_model.json")
result.plot(out / "diagnose_model.png")
print(f"wrote {out / 'diagnose_model.json'} and {out / 'diagnose_model.png'}")

# the minimum bias: the smallest rule whose force residual is below 1e-4 eV/A
print(recommend_quadrature(model, frames[0], 1e-2 if quick else 1e-4))
