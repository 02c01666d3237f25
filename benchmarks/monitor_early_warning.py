"""How many steps before an unphysical event does the monitor fire?

Langevin MD of the shipped PET far outside its training domain (default
5000 K); the monitor runs with action="warn" and the run goes on until two
atoms overlap (distance < 0.4 x the sum of covalent radii) or positions become
non-finite. Per seed: the first flagged step, its metric, the first unphysical
step, and the lead time.

    python benchmarks/monitor_early_warning.py [--temperature 5000] [--seeds 3] [--max-steps 600]
"""

import argparse
import json
import pathlib
import warnings

import ase.build
import numpy as np
from ase import units
from ase.data import covalent_radii
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from symmd import Monitor, SymmetryCalculator, models


def unphysical(atoms) -> bool:
    if not np.isfinite(atoms.positions).all():
        return True
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    r = covalent_radii[atoms.numbers]
    return bool((d / (r[:, None] + r[None])).min() < 0.4)


def run(model, seed: int, temperature: float, max_steps: int) -> dict:
    atoms = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 2, 2)
    rng = np.random.default_rng(seed)
    atoms.numbers[rng.random(len(atoms)) < 0.3] = 13
    atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
    monitor = Monitor(every=10, action="warn", seed=seed)
    atoms.calc = SymmetryCalculator(model, monitor=monitor, seed=seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=temperature, friction=0.02, rng=rng)
    bad = None
    while dyn.nsteps < max_steps and bad is None:
        dyn.run(1)
        if unphysical(atoms):
            bad = dyn.nsteps
    flag = monitor.events[0] if monitor.events else None
    return {
        "seed": seed,
        "first_flag": flag and flag["step"],
        "metric": flag and flag["metric"],
        "first_unphysical": bad,
        "lead_steps": (bad - flag["step"]) if (flag and bad) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temperature", type=float, default=5000.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument(
        "--json",
        default=str(pathlib.Path(__file__).parent / "results" / "monitor_early_warning.json"),
    )
    args = parser.parse_args()
    model = models.load(models.shipped_model())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = [run(model, seed, args.temperature, args.max_steps) for seed in range(args.seeds)]
    print(f"T = {args.temperature:g} K")
    print(f"{'seed':>4} {'first flag':>10} {'metric':>14} {'unphysical':>11} {'lead':>6}")
    for r in rows:
        print(
            f"{r['seed']:>4} {str(r['first_flag']):>10} {str(r['metric']):>14} {str(r['first_unphysical']):>11} {str(r['lead_steps']):>6}"
        )
    pathlib.Path(args.json).write_text(
        json.dumps({"temperature": args.temperature, "rows": rows}, indent=1)
    )


if __name__ == "__main__":
    main()
