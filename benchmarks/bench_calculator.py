"""Cost and accuracy per ASE call: symmd's SymmetryCalculator against metatomic's
SymmetrizedCalculator.

On the 32-atom fcc Cu/Al cell of ``bench_batched.py`` (a = 3.7 A, 30% Al and a
0.05 A rattle, both seeded) with the shipped PET model ``pet-emt-cual``
(float32, CPU), this times one energy+forces+stress evaluation for

* symmd ``SymmetryCalculator`` with ``symmetrize="none"`` and ``"project"``,
  and ``"average"`` at quadrature degree 3 (48 elements) and 5 (120);
* metatomic-ase ``SymmetrizedCalculator(MetatomicCalculator(path), l_max=L)``
  for L = 3 and 5 (84 and 308 rotations, plus one unrotated call).

Every calculator gets ``--warmup`` (default 3) untimed calls (TorchScript only
settles after ~3 runs of a graph); then all of them are called in turn,
``--repeats`` times (interleaved, so machine noise hits every method alike),
each time after ``calc.reset()`` on the same positions. Medians are reported.

Accuracy: the reference forces are the twirl over ``o3.lebedev(11)`` (1200
elements), via ``models.evaluate_rotated`` + ``metrics.average``; a method's
error is the RMS over atoms of ``|F_method - F_ref|`` (eV/A). The raw model's
equivariance error ``metrics.equivariance_error`` (RMS over atoms) on the same
rule is printed for context.

Goal: symmd ``average(L)`` at an equal or lower error than
``SymmetrizedCalculator(l_max=L)`` and at least 2x faster (the speed ratio is
SymmetrizedCalculator time / symmd time).

``--degrees 6 7`` compares the high-degree rules instead (symmd's SO(3)
designs, 232 and 344 elements, against metatomic's 676 + 1 and 780 + 1) and
writes ``bench_calculator_L6_7.json``.

    python benchmarks/bench_calculator.py [--repeats 5] [--warmup 3] [--degrees 3 5] [--quick] [--json PATH]

``--quick`` (1 repeat, 1 warm-up, degree-7 reference) only checks that the
script runs; it writes ``bench_calculator_quick.json`` unless ``--json`` is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import statistics
import time

import ase.build
import numpy as np
import torch
from ase.calculators.calculator import all_changes
from metatomic_ase import MetatomicCalculator, SymmetrizedCalculator

from symmd import SymmetryCalculator, metrics, models, o3

MODEL = "pet-emt-cual"
PROPS = ["energy", "forces", "stress"]
RESULTS = pathlib.Path(__file__).parent / "results"


def make_cell(seed: int = 0) -> ase.Atoms:
    """fcc Cu (a = 3.7 A) x (2, 2, 2) = 32 atoms, 30% Al, rattled 0.05 A (seeded)."""
    rng = np.random.default_rng(seed)
    atoms = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 2, 2)
    numbers = atoms.numbers.copy()
    numbers[rng.choice(len(atoms), round(0.3 * len(atoms)), replace=False)] = 13
    atoms.numbers = numbers
    atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
    return atoms


def call(calc, atoms: ase.Atoms) -> dict:
    """One energy+forces+stress evaluation; reset() forces a recomputation."""
    calc.reset()
    calc.calculate(atoms, PROPS, all_changes)
    return calc.results


def rms(forces: np.ndarray) -> float:
    """RMS over atoms of the per-atom vector norm, [N, 3] -> float."""
    return float(np.sqrt(np.mean(np.sum(np.asarray(forces) ** 2, axis=-1))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls of each method first")
    parser.add_argument(
        "--quick", action="store_true", help="1 repeat, 1 warm-up, degree-7 reference"
    )
    parser.add_argument(
        "--degrees", type=int, nargs="+", default=[3, 5], help="L of both averages (default 3 5)"
    )
    parser.add_argument(
        "--json",
        default=None,
        help="default: benchmarks/results/bench_calculator[_L6_7][_quick].json",
    )
    args = parser.parse_args()
    repeats, warmup = (1, 1) if args.quick else (args.repeats, max(args.warmup, 1))
    ref_degree = 7 if args.quick else 11

    path = models.shipped_model(MODEL)
    adapter = models.load(path)  # loaded once, shared by every symmd calculator
    atoms = make_cell()
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
        f"{len(atoms)} atoms, {warmup} warm-up + {repeats} timed calls each, "
        f"load avg {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    # Reference: the twirl over a rule exact far beyond the quadratures compared.
    q_ref = o3.lebedev(ref_degree)
    start = time.perf_counter()
    u = models.evaluate_rotated(adapter, atoms, q_ref, ("forces",))["forces"]
    f_ref = metrics.average(u, q_ref, "vector").numpy()
    raw_a = rms(metrics.equivariance_error(u, q_ref, "vector").numpy()[:, None])
    ref_s = time.perf_counter() - start
    print(
        f"reference: {q_ref.name} ({len(q_ref)} elements) in {ref_s:.1f} s; "
        f"RMS |F_ref| {rms(f_ref):.4f} eV/A, raw model equivariance error A_F {raw_a:.3e} eV/A",
        flush=True,
    )

    calcs = {
        "symmd none": SymmetryCalculator(adapter, symmetrize="none"),
        "symmd project": SymmetryCalculator(adapter, symmetrize="project"),
    }
    for lmax in args.degrees:
        calcs[f"symmd average L={lmax}"] = SymmetryCalculator(
            adapter, symmetrize="average", quadrature=lmax
        )
    for lmax in args.degrees:
        calcs[f"metatomic Sym l_max={lmax}"] = SymmetrizedCalculator(
            MetatomicCalculator(path), l_max=lmax
        )
    # Model evaluations per call (metatomic adds one unrotated call to its rule).
    copies = {
        name: (len(c.quadrature) if c.symmetrize == "average" else 1)
        if isinstance(c, SymmetryCalculator)
        else len(c.quadrature_rotations) + 1
        for name, c in calcs.items()
    }

    errors = {}
    for i in range(warmup):  # untimed; the outputs are deterministic, so keep the last
        for name, calc in calcs.items():
            forces = call(calc, atoms)["forces"]
            if i == warmup - 1:
                errors[name] = rms(forces - f_ref)

    times = {name: [] for name in calcs}
    for _ in range(repeats):  # interleaved
        for name, calc in calcs.items():
            start = time.perf_counter()
            call(calc, atoms)
            times[name].append(1e3 * (time.perf_counter() - start))
    med = {name: statistics.median(t) for name, t in times.items()}

    print(f"\n{'method':<22} {'copies':>6} {'median ms':>10} {'min ms':>9} {'force err eV/A':>15}")
    for name in calcs:
        print(
            f"{name:<22} {copies[name]:>6} {med[name]:>10.1f} {min(times[name]):>9.1f} {errors[name]:>15.3e}"
        )
    print(
        f"(raw model equivariance error A_F, RMS over atoms: {raw_a:.3e} eV/A; load avg {os.getloadavg()[0]:.2f})"
    )

    comparison = {}
    print(
        f"\n{'L':>2} {'speed ratio Sym/symmd':>22} {'err symmd':>10} {'err Sym':>10}  goal (<= err, >= 2x)"
    )
    for lmax in args.degrees:
        ours, peer = f"symmd average L={lmax}", f"metatomic Sym l_max={lmax}"
        ratio = med[peer] / med[ours]
        met = ratio >= 2.0 and errors[ours] <= errors[peer]
        comparison[str(lmax)] = {
            "speed_ratio": ratio,
            "error_symmd": errors[ours],
            "error_metatomic": errors[peer],
            "goal_met": met,
        }
        print(
            f"{lmax:>2} {ratio:>22.2f} {errors[ours]:>10.3e} {errors[peer]:>10.3e}  {'yes' if met else 'NO'}"
        )

    out = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_avg_1min_end": os.getloadavg()[0],
        "model": MODEL,
        "n_atoms": len(atoms),
        "repeats": repeats,
        "warmup": warmup,
        "reference": {
            "quadrature": q_ref.name,
            "n_elements": len(q_ref),
            "seconds": ref_s,
            "rms_force": rms(f_ref),
            "raw_equivariance_error_rms": raw_a,
        },
        "methods": {
            name: {
                "copies": copies[name],
                "median_ms": med[name],
                "min_ms": min(times[name]),
                "times_ms": times[name],
                "force_error_rms": errors[name],
            }
            for name in calcs
        },
        "rules": {
            str(lmax): calcs[f"symmd average L={lmax}"].quadrature.name for lmax in args.degrees
        },
        "metatomic_over_symmd": comparison,
    }
    tag = "" if args.degrees == [3, 5] else "_L" + "_".join(map(str, args.degrees))
    json_path = pathlib.Path(
        args.json or RESULTS / f"bench_calculator{tag}{'_quick' if args.quick else ''}.json"
    )
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {json_path}")


if __name__ == "__main__":
    main()
