"""quadrature="auto" against a direct high-degree reference.

Shipped PET (pet-emt-cual, float32), 32-atom rattled Cu/Al cell. For every
candidate rule ``quadrature(L)``, the measured RMS force residual of its
average against the degree-11 and degree-19 twirls; for every tolerance, the
degree ``recommend_quadrature`` picks, what it predicted, what the rule
really does, the smallest degree that would have been enough (``needed``,
measured against degree 11), the probe copies it evaluated and its time.

    python benchmarks/auto_quadrature.py [--repeat 2x2x2]
"""

import argparse
import json
import pathlib
import time
import warnings

import ase.build
import numpy as np

from symmd import metrics, models, o3
from symmd.recommend import CANDIDATE_DEGREES, recommend_quadrature

TOLERANCES = (3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6)


def make_cell(repeat):
    atoms = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True) * repeat
    rng = np.random.default_rng(4)
    atoms.numbers[rng.random(len(atoms)) < 0.3] = 13
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    return atoms


def twirl(model, atoms, q):
    return metrics.average(
        models.evaluate_rotated(models.load(model), atoms, q, ("forces",))["forces"], q, "vector"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", default="2x2x2", help="repetitions of the 4-atom cubic cell")
    args = parser.parse_args()
    repeat = tuple(int(x) for x in args.repeat.split("x"))
    warnings.simplefilter("ignore")
    model = models.load(models.shipped_model("pet-emt-cual"))
    atoms = make_cell(repeat)
    references = {degree: twirl(model, atoms, o3.lebedev(degree)) for degree in (11, 19)}
    measured = {}
    for degree in CANDIDATE_DEGREES:
        avg = twirl(model, atoms, o3.quadrature(degree))
        measured[degree] = {
            ref: float(((avg - value) ** 2).sum(-1).mean().sqrt())
            for ref, value in references.items()
        }
    print(f"{len(atoms)} atoms; RMS force residual of quadrature(L) (eV/A):")
    print(f"{'L':>3} {'rule':>22} {'copies':>7} {'vs deg 11':>11} {'vs deg 19':>11}")
    for degree, values in measured.items():
        q = o3.quadrature(degree)
        print(f"{degree:>3} {q.name:>22} {len(q):>7} {values[11]:11.2e} {values[19]:11.2e}")

    rows = []
    print(
        f"\n{'tolerance':>10} {'chosen':>7} {'predicted':>10} {'measured':>10} {'needed':>7} {'ok':>4} {'probe copies':>13} {'time':>7}"
    )
    for tol in TOLERANCES:
        start = time.perf_counter()
        rec = recommend_quadrature(model, atoms, tol)
        elapsed = time.perf_counter() - start
        needed = next((d for d in CANDIDATE_DEGREES if measured[d][11] <= tol), None)
        steps = list(CANDIDATE_DEGREES)
        ok = (
            measured[rec.degree][11] <= 2 * tol
            and needed is not None
            and steps.index(rec.degree) <= steps.index(needed) + 1
        )
        row = {
            "tolerance": tol,
            "chosen": rec.degree,
            "reached": rec.reached,
            "predicted": rec.predicted["forces"][rec.degree],
            "measured_vs_11": measured[rec.degree][11],
            "measured_vs_19": measured[rec.degree][19],
            "needed": needed,
            "within_2x_and_one_step": ok,
            "probe_degree": rec.probe_degree,
            "probe_copies": rec.probe_copies,
            "seconds": elapsed,
        }
        rows.append(row)
        print(
            f"{tol:10.0e} {rec.degree:>7} {row['predicted']:10.2e} {row['measured_vs_11']:10.2e} "
            f"{str(needed):>7} {'yes' if ok else 'NO':>4} {rec.probe_copies:>13} {elapsed:6.1f}s"
        )
    out = {
        "atoms": len(atoms),
        "model": "pet-emt-cual",
        "measured": {str(k): v for k, v in measured.items()},
        "recommendations": rows,
    }
    path = pathlib.Path(__file__).parent / "results" / "auto_quadrature.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
