"""The exported symmd model against metatomic's ``SymmetrizedModel``, both run
through ``metatomic_ase.MetatomicCalculator`` (what an engine sees).

On fcc Cu/Al cells of 32 and 108 atoms (a = 3.7 A, 30% Al, 0.05 A rattle,
seeded) with the shipped PET model ``pet-emt-cual`` (float32, CPU), this times
one energy + forces + stress call of

* ``symmd.export(model, quadrature=L)`` (24 / 48 / 120 copies at L = 2 / 3 / 5);
* ``SymmetrizedModel.wrap(model, max_angular_momentum_grid=L)``, the same
  exactness degree (Lebedev x (L + 1) x 2 copies: 36 / 48 / 168);
* ``SymmetrizedModel.wrap(model, max_angular_momentum_grid=2L + 1)``, the
  grid its defaults use for a degree-L target (exact variance): 168 / 416 /
  1200 copies;
* the raw model, and ``symmd.export(model, symmetrize="none",
  monitor_every=10)`` (the raw model plus in-engine monitoring; its time is
  the mean over whole cycles of 10 calls).

Every model gets ``--warmup`` untimed calls (TorchScript settles after a few
runs), then the models are called in turn, ``--repeats`` times (interleaved,
so machine noise hits all alike; the 2L + 1 grids, up to 1200 copies, get at
most 2 repeats), each after ``calc.reset()``. Medians are reported.
Accuracy: the max over atoms and components of ``|F - F_ref|`` (eV/A), with
``F_ref`` the average over ``symmd.o3.quadrature(11)`` (1200 copies).

Goals: symmd never slower at equal copies (L = 3); >= 1.3x faster at L = 5
and >= 1.4x at L = 2 than the same-degree grid, with equal or lower error;
monitored export <= 1.2x the raw model's time per call.

    OMP_NUM_THREADS=1 python benchmarks/bench_export.py [--repeats 3] [--warmup 2] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import statistics
import tempfile
import time
import warnings

import ase.build
import numpy as np
import torch
from metatomic.torch import load_atomistic_model
from metatomic.torch.o3 import SymmetrizedModel
from metatomic_ase import MetatomicCalculator

import symmd
from symmd import metrics, models, o3

MODEL = models.shipped_model("pet-emt-cual")
RESULTS = pathlib.Path(__file__).parent / "results"


def make_cell(repeat: int, seed: int = 0) -> ase.Atoms:
    rng = np.random.default_rng(seed)
    atoms = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True) * (repeat, repeat, repeat)
    atoms.numbers[rng.random(len(atoms)) < 0.3] = 13
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    return atoms


def reference_forces(atoms, degree: int) -> np.ndarray:
    q = o3.quadrature(degree)
    out = models.evaluate_rotated(models.load(MODEL), atoms, q, ["forces"])
    return metrics.average(out["forces"], q, "vector").cpu().numpy()


def build(folder: pathlib.Path, degrees) -> dict:
    """{name: (path, copies)} for every exported model."""
    made = {"raw": (MODEL, 1)}
    path = folder / "monitored.pt"
    symmd.export(MODEL, path, symmetrize="none", monitor_every=10, seed=0)
    made["symmd monitored (none, every 10)"] = (str(path), 1)
    for degree in degrees:
        path = folder / f"symmd{degree}.pt"
        symmd.export(MODEL, path, quadrature=degree)
        made[f"symmd L={degree}"] = (str(path), len(o3.quadrature(degree)))
        for grid, label in ((degree, "same degree"), (2 * degree + 1, "default 2L+1")):
            wrapper = SymmetrizedModel.wrap(
                load_atomistic_model(MODEL),
                max_angular_momentum_target=degree,
                max_angular_momentum_grid=grid,
            )
            copies = 2 * sum(int(b.matrices.shape[0]) for b in wrapper.module._batches)
            path = folder / f"metatomic{degree}_{grid}.pt"
            wrapper.save(str(path))
            made[f"metatomic L={degree} grid {grid} ({label})"] = (str(path), copies)
    return made


def affordable(made: dict, n_atoms: int, limit: int) -> dict:
    """The models whose rotated copies x atoms stay within ``limit``: autograd
    keeps the activations of every copy until the backward pass, and a 1200-copy
    grid on 32 atoms was killed for memory on the 23 GB machine shared here."""
    return {name: entry for name, entry in made.items() if entry[1] * n_atoms <= limit}


def time_calls(calcs: dict, atoms, repeats: int, warmup: int, cycle: set) -> dict:
    for calc in calcs.values():
        for _ in range(warmup):
            calc.reset()
            calc.get_forces(atoms)
    times: dict = {name: [] for name in calcs}
    for r in range(repeats):
        for name, calc in calcs.items():
            if "grid" in name and "2L+1" in name and r >= 2:
                continue
            n = 10 if name in cycle else 1
            start = time.perf_counter()
            for _ in range(n):
                calc.reset()
                calc.get_stress(atoms)
            times[name].append((time.perf_counter() - start) / n)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one repeat, 32 atoms, L = 2")
    parser.add_argument("--json", help="output JSON (default results/bench_export.json)")
    parser.add_argument(
        "--max-copy-atoms",
        type=int,
        default=20000,
        help="skip models whose copies x atoms exceed this (memory; default 20000)",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    degrees = (2,) if args.quick else (2, 3, 5)
    repeats = 1 if args.quick else args.repeats
    sizes = (2,) if args.quick else (2, 3)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        built = build(pathlib.Path(tmp), degrees)
        skipped = []
        for repeat in sizes:
            atoms = make_cell(repeat)
            made = affordable(built, len(atoms), args.max_copy_atoms)
            skipped += [
                {"atoms": len(atoms), "method": name, "copies": built[name][1]}
                for name in built
                if name not in made
            ]
            ref = reference_forces(atoms, 7 if args.quick else 11)
            calcs = {name: MetatomicCalculator(path) for name, (path, _) in made.items()}
            cycle = {"raw", "symmd monitored (none, every 10)"}
            medians = time_calls(calcs, atoms, repeats, 1 if args.quick else args.warmup, cycle)
            for name, (_, copies) in made.items():
                calcs[name].reset()
                error = float(np.abs(calcs[name].get_forces(atoms) - ref).max())
                rows.append(
                    {
                        "atoms": len(atoms),
                        "method": name,
                        "copies": copies,
                        "seconds": medians[name],
                        "max_force_error": error,
                    }
                )
                print(
                    f"{len(atoms):4d} atoms  {name:42s} {copies:5d} copies "
                    f"{medians[name] * 1e3:9.1f} ms  max |dF| {error:.2e} eV/A",
                    flush=True,
                )
    ratios = []
    for n in sorted({row["atoms"] for row in rows}):
        by = {row["method"]: row for row in rows if row["atoms"] == n}
        for degree in degrees:
            ours = by[f"symmd L={degree}"]
            for grid, label in ((degree, "same degree"), (2 * degree + 1, "default 2L+1")):
                theirs = by.get(f"metatomic L={degree} grid {grid} ({label})")
                if theirs is None:
                    continue
                ratios.append(
                    {
                        "atoms": n,
                        "degree": degree,
                        "against": label,
                        "speedup": theirs["seconds"] / ours["seconds"],
                        "error_ratio": ours["max_force_error"] / theirs["max_force_error"],
                    }
                )
        ratios.append(
            {
                "atoms": n,
                "monitored_over_raw": by["symmd monitored (none, every 10)"]["seconds"]
                / by["raw"]["seconds"],
            }
        )
    print("\nspeed-ups (metatomic time / symmd time) and error ratios (symmd / metatomic):")
    for ratio in ratios:
        print(
            "  "
            + ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in ratio.items()
            )
        )
    out = (
        pathlib.Path(args.json)
        if args.json
        else RESULTS / ("bench_export_quick.json" if args.quick else "bench_export.json")
    )
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "threads": torch.get_num_threads(),
                "repeats": repeats,
                "rows": rows,
                "ratios": ratios,
                "skipped_for_memory": skipped,
            },
            indent=1,
        )
    )
    for row in skipped:
        print(f"skipped (memory): {row['atoms']} atoms, {row['method']}, {row['copies']} copies")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
