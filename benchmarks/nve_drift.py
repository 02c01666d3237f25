"""NVE energy drift of the shipped PET in each symmd mode.

VelocityVerlet, 32-atom Cu/Al cell, 300 K initial velocities (seeded), 1 fs;
drift = slope of a least-squares line through the total energy per atom,
in meV/atom/ps. The shipped models are conservative only (no
non-conservative heads), so only conservative forces are measured.

    python benchmarks/nve_drift.py [--steps 500] [--json PATH]
"""

import argparse
import json
import pathlib
import time
import warnings

import ase.build
import numpy as np
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

from symmd import SymmetryCalculator, models


def run(model, mode: str, steps: int, dt_fs: float, degree: int) -> dict:
    atoms = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 2, 2)
    rng = np.random.default_rng(0)
    atoms.numbers[rng.random(len(atoms)) < 0.3] = 13
    atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=rng)
    atoms.calc = SymmetryCalculator(model, symmetrize=mode, quadrature=degree)
    dyn = VelocityVerlet(atoms, dt_fs * units.fs)
    energies = []
    dyn.attach(lambda: energies.append(atoms.get_total_energy() / len(atoms)), interval=1)
    start = time.perf_counter()
    dyn.run(steps)
    t_ps = np.arange(len(energies)) * dt_fs / 1000
    slope = np.polyfit(t_ps, np.array(energies), 1)[0]
    return {
        "mode": mode,
        "drift_meV_per_atom_per_ps": 1000 * slope,
        "max_deviation_meV_per_atom": 1000 * float(np.ptp(energies)),
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--dt", type=float, default=1.0, help="fs")
    parser.add_argument("--degree", type=int, default=3)
    parser.add_argument(
        "--json", default=str(pathlib.Path(__file__).parent / "results" / "nve_drift.json")
    )
    args = parser.parse_args()
    model = models.load(models.shipped_model())
    rows = [
        run(model, mode, args.steps, args.dt, args.degree)
        for mode in ("none", "project", "average")
    ]
    print(f"{'mode':<10}{'drift meV/atom/ps':>20}{'max dev meV/atom':>18}{'s':>8}")
    for r in rows:
        print(
            f"{r['mode']:<10}{r['drift_meV_per_atom_per_ps']:>20.4f}{r['max_deviation_meV_per_atom']:>18.4f}{r['seconds']:>8.1f}"
        )
    pathlib.Path(args.json).write_text(
        json.dumps(
            {"steps": args.steps, "dt_fs": args.dt, "degree": args.degree, "rows": rows}, indent=1
        )
    )


if __name__ == "__main__":
    main()
