"""Overhead of the equivariance Monitor during MD.

Times ``--steps`` (default 200) steps of ASE ``VelocityVerlet`` (2 fs, NVE,
momenta from a 300 K Maxwell-Boltzmann distribution with a seeded rng) on the
32-atom fcc Cu/Al cell of ``bench_calculator.py`` with the shipped PET model
``pet-emt-cual`` (float32, CPU), for

* ``plain``: ``SymmetryCalculator(adapter)`` (raw model, no monitor);
* ``monitored``: ``SymmetryCalculator(adapter, monitor=Monitor(every=10,
  rotations=2, seed=0))``: a batched 2-rotation equivariance check every 10
  force evaluations, plus the per-step physics checks;
* ``metatomic``: a plain ``MetatomicCalculator`` (no symmd), for context.

Each variant gets 3 untimed warm-up force evaluations (the monitored one with
``every=1``, so its 2-copy graph is warmed up too). Then the variants run in
turn (plain, monitored, metatomic), ``--repeats`` times (default 3), each run
on a fresh copy of the same initial atoms and with a fresh calculator and
monitor, so every run follows the same trajectory. Medians are reported, with
the ratio monitored/plain (goal: <= 1.2x).

    python benchmarks/bench_monitor.py [--repeats 3] [--steps 200] [--quick] [--json PATH]

``--quick`` (1 repeat, 20 steps) only checks that the script runs; it writes
``bench_monitor_quick.json`` unless ``--json`` is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import statistics
import time
import warnings

import numpy as np
import torch
from ase import units
from ase.md.verlet import VelocityVerlet
from bench_calculator import make_cell  # same directory: the same 32-atom cell
from metatomic_ase import MetatomicCalculator

from symmd import Monitor, SymmetryCalculator, models

try:  # Maxwell-Boltzmann momenta; ASE >= 3.29 renamed MaxwellBoltzmannDistribution
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

MODEL = "pet-emt-cual"
RESULTS = pathlib.Path(__file__).parent / "results"


def run_md(calc, template, steps: int) -> tuple[float, np.ndarray]:
    """Seconds for ``steps`` VelocityVerlet steps from a copy of ``template``
    (positions and momenta), and the final positions."""
    atoms = template.copy()
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep=2.0 * units.fs)
    start = time.perf_counter()
    dyn.run(steps)
    return time.perf_counter() - start, atoms.positions.copy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 20 steps")
    parser.add_argument(
        "--json", default=None, help="default: benchmarks/results/bench_monitor[_quick].json"
    )
    args = parser.parse_args()
    repeats, steps = (1, 20) if args.quick else (args.repeats, args.steps)

    path = models.shipped_model(MODEL)
    adapter = models.load(path)  # loaded once, outside every timing
    template = make_cell()
    thermalize_momenta(template, temperature_K=300, rng=np.random.default_rng(1))
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
        f"{len(template)} atoms, {steps} steps x {repeats} runs each, load avg {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    # Each run gets a fresh calculator (call counter and monitor schedule start at 0).
    metatomic = MetatomicCalculator(path)

    def fresh_metatomic():
        metatomic.reset()
        return metatomic

    monitors = []  # kept to count the checks each monitored run made

    def fresh_monitored(every: int = 10):
        monitors.append(Monitor(every=every, rotations=2, seed=0))
        return SymmetryCalculator(adapter, monitor=monitors[-1])

    variants = {
        "plain": lambda: SymmetryCalculator(adapter),
        "monitored": fresh_monitored,
        "metatomic": fresh_metatomic,
    }

    # Warm-up: 2 steps = 3 force evaluations per variant (every one checked when monitored).
    warnings.simplefilter(
        "ignore"
    )  # the monitor may warn on a noisy baseline; it does not change the run
    for name, make in variants.items():
        run_md(make(1) if name == "monitored" else make(), template, 2)
    monitors.clear()

    times = {name: [] for name in variants}
    final = {}
    for _ in range(repeats):  # interleaved: plain, monitored, metatomic, plain, ...
        for name, make in variants.items():
            seconds, final[name] = run_md(make(), template, steps)
            times[name].append(seconds)
    med = {name: statistics.median(t) for name, t in times.items()}
    n_checks = [sum(1 for row in m.history if "a2_forces" in row) for m in monitors]
    n_events = [len(m.events) for m in monitors]
    ratio = med["monitored"] / med["plain"]
    # The monitor only observes: the trajectory must be the same as the plain one.
    same_traj = float(np.abs(final["monitored"] - final["plain"]).max())
    vs_metatomic = float(np.abs(final["metatomic"] - final["plain"]).max())

    print(f"\n{'variant':<11} {'median s':>9} {'min s':>8} {'ms/step':>8} {'vs plain':>9}")
    for name in variants:
        print(
            f"{name:<11} {med[name]:>9.2f} {min(times[name]):>8.2f} {1e3 * med[name] / steps:>8.1f} "
            f"{med[name] / med['plain']:>8.2f}x"
        )
    print(
        f"\nmonitored/plain = {ratio:.2f}x (goal <= 1.2x: {'yes' if ratio <= 1.2 else 'NO'}); "
        f"equivariance checks per run {n_checks}, monitor events {n_events}"
    )
    print(
        f"final positions, max |monitored - plain| {same_traj:.1e} A, |metatomic - plain| {vs_metatomic:.1e} A; "
        f"load avg {os.getloadavg()[0]:.2f}"
    )

    out = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_avg_1min_end": os.getloadavg()[0],
        "model": MODEL,
        "n_atoms": len(template),
        "steps": steps,
        "timestep_fs": 2.0,
        "temperature_K": 300,
        "repeats": repeats,
        "monitor": {"every": 10, "rotations": 2, "seed": 0},
        "variants": {
            name: {
                "median_s": med[name],
                "min_s": min(times[name]),
                "times_s": times[name],
                "ms_per_step": 1e3 * med[name] / steps,
            }
            for name in variants
        },
        "monitored_over_plain": ratio,
        "goal_met": ratio <= 1.2,
        "checks_per_run": n_checks,
        "events_per_run": n_events,
        "max_final_position_diff_monitored_plain": same_traj,
        "max_final_position_diff_metatomic_plain": vs_metatomic,
    }
    json_path = pathlib.Path(
        args.json or RESULTS / f"bench_monitor{'_quick' if args.quick else ''}.json"
    )
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {json_path}")


if __name__ == "__main__":
    main()
