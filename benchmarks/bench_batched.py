"""Wall time of energy+forces+stress for 48 rotated copies: batched vs loops.

For a fcc Cu/Al cell (30% Al, seeded, rattled by 0.05 A) of 32 and 108 atoms
and the 48 O(3) elements of ``o3.quadrature(3)`` (exact to degree 3), this
times, with the shipped PET model ``pet-emt-cual`` (float32, CPU):

(a) ``batched``: one ``models.evaluate_rotated`` call for all 48 copies;
(b) ``ase-loop``: a Python loop building 48 rotated ``ase.Atoms`` copies, each
    evaluated by one ``MetatomicCalculator`` (one model call per copy);
(c) ``metatomic-sym``: ``SymmetrizedCalculator(l_max=3)`` on the unrotated
    cell (84 rotations in one batch + one unrotated call, same exactness);
(d) ``single``: one unrotated ``MetatomicCalculator`` evaluation, the cost of
    the model itself ((a)/(d) = 48 would be "free" batching: not measured).

Each method gets ``--warmup`` (default 3) untimed calls first: TorchScript's
profiling executor only optimises a graph after ~2 runs of it, so a single
warm-up leaves the next timed calls slow (up to ~40x for (d)). Then the methods are
interleaved (a, b, c, d, a, b, ...) ``--repeats`` times; medians and minima are reported
together with (b)/(a), (c)/(a) and (a)/(d). The warm-up outputs of (a) and (b)
are compared (energies, forces, symmetric part of the stress). Finally, the
peak RSS increase of (a) on 108 atoms x 48 copies is measured at batch_size=8
and batch_size=None, each in a fresh subprocess (``--memory-child BS``).

    python benchmarks/bench_batched.py [--repeats 5] [--warmup 3] [--quick] [--json PATH]

``--quick`` (1 repeat, 1 warm-up, 32 atoms, no memory test) only checks that the
script runs; it writes ``bench_batched_quick.json`` unless ``--json`` is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

import ase.build
import numpy as np
import torch
from metatomic_ase import MetatomicCalculator, SymmetrizedCalculator

from symmd import models, o3

MODEL = "pet-emt-cual"
PROPS = ("energy", "forces", "stress")
RESULTS = pathlib.Path(__file__).parent / "results"


def make_cell(repeat: int, seed: int = 0) -> ase.Atoms:
    """fcc Cu (a = 3.7 A, 4-atom cubic cell) x repeat^3, 30% Al, rattled 0.05 A."""
    rng = np.random.default_rng(seed)
    atoms = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True) * (repeat, repeat, repeat)
    symbols = np.array(atoms.get_chemical_symbols())
    symbols[rng.choice(len(atoms), round(0.3 * len(atoms)), replace=False)] = "Al"
    atoms.set_chemical_symbols(symbols.tolist())
    atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
    return atoms


def rotated_copy(atoms: ase.Atoms, rot: np.ndarray) -> ase.Atoms:
    """A new Atoms with positions @ R.T and cell rows @ R.T (not wrapped)."""
    new = atoms.copy()
    new.positions = atoms.positions @ rot.T
    new.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    return new


def ase_eval(atoms: ase.Atoms, calc) -> tuple:
    """energy, forces, 3x3 stress through ASE; reset() forces a recomputation."""
    calc.reset()
    atoms.calc = calc
    return atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)


def memory_child(batch_size) -> None:
    """Print {"baseline_mib", "peak_increase_mib"} for 108 atoms x 48 copies."""
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # inherited from the parent
    adapter = models.load(models.shipped_model(MODEL))
    atoms, q = make_cell(3), o3.quadrature(3)
    models.evaluate_rotated(adapter, atoms, q.rotations[:1], PROPS)  # warm-up: one copy
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    models.evaluate_rotated(adapter, atoms, q, PROPS, batch_size=batch_size)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "start_mib": start / 1024,
                "baseline_mib": base / 1024,
                "peak_increase_mib": (peak - base) / 1024,
            }
        )
    )


def bench_cell(atoms: ase.Atoms, path: str, adapter, q, repeats: int, warmup: int) -> dict:
    rots = q.rotations.numpy()
    calc = MetatomicCalculator(path)
    sym_calc = SymmetrizedCalculator(MetatomicCalculator(path), l_max=3)

    def batched():
        return models.evaluate_rotated(adapter, atoms, q, PROPS)

    def ase_loop():
        out = [ase_eval(rotated_copy(atoms, rot), calc) for rot in rots]
        return [np.array(x) for x in zip(*out)]  # energies [K], forces [K,N,3], stress [K,3,3]

    def metatomic_sym():
        return ase_eval(atoms.copy(), sym_calc)

    def single():
        return ase_eval(atoms.copy(), calc)

    methods = {
        "batched": batched,
        "ase-loop": ase_loop,
        "metatomic-sym": metatomic_sym,
        "single": single,
    }
    for _ in range(warmup):  # untimed: TorchScript optimisation, allocator
        warm = {name: fn() for name, fn in methods.items()}

    # (a) vs (b): same copies, same model; ASE stores a symmetric (Voigt) stress
    ref, loop = warm["batched"], warm["ase-loop"]
    sym_stress = 0.5 * (ref["stress"] + ref["stress"].transpose(-1, -2))
    check = {
        "max_abs_energy_diff": float(np.abs(ref["energy"].numpy() - loop[0]).max()),
        "max_abs_forces_diff": float(np.abs(ref["forces"].numpy() - loop[1]).max()),
        "max_abs_stress_diff": float(np.abs(sym_stress.numpy() - loop[2]).max()),
    }

    times = {name: [] for name in methods}
    for _ in range(repeats):  # interleaved, so slow drifts hit every method alike
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            times[name].append(1e3 * (time.perf_counter() - start))
    stats = {
        n: {"median_ms": statistics.median(t), "min_ms": min(t), "times_ms": t}
        for n, t in times.items()
    }
    med = {n: s["median_ms"] for n, s in stats.items()}
    ratios = {
        "ase-loop/batched": med["ase-loop"] / med["batched"],
        "metatomic-sym/batched": med["metatomic-sym"] / med["batched"],
        "batched/single": med["batched"] / med["single"],
    }
    return {
        "n_atoms": len(atoms),
        "methods": stats,
        "ratios": ratios,
        "agreement": check,
        "n_rotations_symmetrized": len(sym_calc.quadrature_rotations),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls of each method first")
    parser.add_argument(
        "--quick", action="store_true", help="1 repeat, 1 warm-up, 32 atoms, no memory test"
    )
    parser.add_argument(
        "--json", default=None, help="default: benchmarks/results/bench_batched[_quick].json"
    )
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        return memory_child(None if args.memory_child == "None" else int(args.memory_child))

    repeats, warmup = (1, 1) if args.quick else (args.repeats, max(args.warmup, 1))
    repeat_sizes = (2,) if args.quick else (2, 3)  # 32 and 108 atoms
    path = models.shipped_model(MODEL)
    adapter = models.load(path)  # loaded once, outside every timing
    q = o3.quadrature(3)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()} (default), "
        f"cpus {os.cpu_count()}, {len(q)} rotations, {warmup} warm-up + {repeats} timed calls each"
    )

    # Memory first: Linux carries ru_maxrss over fork + exec, so a child spawned
    # by a parent that already ran the big timings would inherit its peak.
    memory = {}
    if not args.quick:  # each batch size in a fresh process, so peaks don't mix
        for bs in ("8", "None"):
            proc = subprocess.run(
                [sys.executable, __file__, "--memory-child", bs],
                capture_output=True,
                text=True,
                check=True,
            )
            memory[bs] = json.loads(proc.stdout.strip().splitlines()[-1])
            assert memory[bs]["baseline_mib"] > memory[bs]["start_mib"], "inherited ru_maxrss"

    cells = {}
    for rep in repeat_sizes:
        atoms = make_cell(rep)
        print(f"... {len(atoms)} atoms", flush=True)
        cells[str(len(atoms))] = bench_cell(atoms, path, adapter, q, repeats, warmup)

    labels = {
        "batched": "(a) symmd batched",
        "ase-loop": "(b) ASE loop x48",
        "metatomic-sym": "(c) metatomic Symmetrized",
        "single": "(d) single eval",
    }
    ratio_of = {
        "batched": "batched/single",
        "ase-loop": "ase-loop/batched",
        "metatomic-sym": "metatomic-sym/batched",
    }
    print(f"\n{'method':<27} {'atoms':>5} {'median ms':>10} {'min ms':>10} {'ratio':>7}  ratio of")
    for res in cells.values():
        for name, s in res["methods"].items():
            key = ratio_of.get(name)
            ratio = f"{res['ratios'][key]:7.2f}  {key}" if key else f"{'':>7}"
            print(
                f"{labels[name]:<27} {res['n_atoms']:>5} {s['median_ms']:>10.1f} {s['min_ms']:>10.1f} {ratio}"
            )
    print("\n(a) vs (b) agreement (stress: symmetric part of the batched stress):")
    for res in cells.values():
        print(
            f"  {res['n_atoms']:>4} atoms: "
            + ", ".join(f"{k} {v:.2e}" for k, v in res["agreement"].items())
        )

    if memory:
        print("\npeak RSS increase, 108 atoms x 48 copies (after load + 1-copy warm-up):")
        for bs, m in memory.items():
            print(
                f"  batch_size={bs:<5} {m['peak_increase_mib']:8.1f} MiB  (baseline {m['baseline_mib']:.0f} MiB)"
            )

    out = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "model": MODEL,
        "quadrature": q.name,
        "n_rotations": len(q),
        "repeats": repeats,
        "warmup": warmup,
        "cells": cells,
        "memory_108_atoms": memory,
    }
    json_path = pathlib.Path(
        args.json or RESULTS / f"bench_batched{'_quick' if args.quick else ''}.json"
    )
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {json_path}")


if __name__ == "__main__":
    main()
