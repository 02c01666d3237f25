"""The cost of watching: symmd's raw path and its monitor against a plain
metatomic-ase MD step, side by side in one run.

ASE ``VelocityVerlet`` (2 fs, NVE, 300 K Maxwell-Boltzmann momenta, seeded)
with the shipped PET ``pet-emt-cual`` (float32, CPU) on fcc Cu/Al cells of
32 and 108 atoms (``symmd.models.cual_cell``, 0.05 A rattle), for

* ``metatomic``: a plain ``metatomic_ase.MetatomicCalculator`` (the baseline);
* ``none`` / ``project``: ``SymmetryCalculator(model, symmetrize=...)``;
* ``monitor10`` / ``monitor1``: ``none`` with ``Monitor(every=10 | 1,
  rotations=2)``: the draws join the step's own batched model call;
* ``monitor10_separate``: the same with the draws evaluated in a model call
  of their own (the monitor before issue 22), for comparison;
* ``physics``: ``none`` with ``Monitor(every=0)``: the per-step physical
  checks alone (no draws), the monitor's floor;
* ``export_none``: ``symmd.export(model, symmetrize="none")`` run by
  ``MetatomicCalculator`` (the raw exported model, the exported baseline);
* ``export_monitor10`` / ``export_monitor1``: the same with
  ``monitor_every=10 | 1`` (2 draws).

Every variant keeps its own calculator, atoms and integrator for the whole
run, so a monitor checks exactly one step in ``every``. After ``--warmup``
steps each (TorchScript settles; every batch shape is seen), the variants run
``--steps`` steps in turn, in a new seeded random order every round, for
``--rounds`` rounds, so that the load of other jobs falls on all alike. Per
round the ratio to the baseline of the same round is taken (paired); the
tables report medians over rounds, of process CPU time (1 thread: the work
done, insensitive to time spent descheduled) and of wall time. Goals:
``none`` <= 1.03x, ``project`` <= 1.05x, ``monitor10`` <= 1.12x
``metatomic``; ``export_monitor10`` <= 1.12x ``export_none``; judged on the
CPU-time ratios.

    python benchmarks/bench_monitor.py [--rounds 15] [--steps 20] [--warmup 12]
        [--sizes 32 108] [--threads 1] [--quick] [--json PATH]

``--quick`` (32 atoms, 2 rounds of 10 steps) only checks that the script
runs; it writes ``results/bench_monitor_quick.json`` (ignored by git) unless
``--json`` is given. The load average (``/proc/loadavg``) is recorded at the
start, after every round and at the end.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch; vesin reads it too

import argparse
import datetime
import json
import pathlib
import statistics
import tempfile
import time
import warnings

import numpy as np
import torch
from ase import units
from ase.calculators.calculator import all_changes
from ase.md.verlet import VelocityVerlet
from metatomic_ase import MetatomicCalculator

import symmd
from symmd import Monitor, SymmetryCalculator, models

try:  # Maxwell-Boltzmann momenta; ASE >= 3.29 renamed MaxwellBoltzmannDistribution
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

MODEL = "pet-emt-cual"
RESULTS = pathlib.Path(__file__).parent / "results"
REPEATS = {32: (2, 2, 2), 108: (3, 3, 3)}
#: (variant, baseline, goal) judged on the median paired CPU-time ratio
GOALS = [
    ("none", "metatomic", 1.03),
    ("project", "metatomic", 1.05),
    ("monitor10", "metatomic", 1.12),
    ("export_monitor10", "export_none", 1.12),
]


def load_average() -> float:
    with open("/proc/loadavg") as handle:
        return float(handle.read().split()[0])


class SeparateDraws(Monitor):
    """A monitor that asks for no draws in the step's batch, so that its check
    evaluates them in a model call of its own (the same seeded draws)."""

    def draws(self, calc):
        return None


def make_variants(adapter, path: str, folder: str) -> dict:
    """name -> calculator (fresh; each is used for one whole run)."""
    exported = {}
    for every in (None, 10, 1):
        out = os.path.join(folder, f"export_{every}.pt")
        symmd.export(path, out, symmetrize="none", monitor_every=every, seed=0)
        exported[every] = out
    return {
        "metatomic": MetatomicCalculator(path),
        "none": SymmetryCalculator(adapter),
        "project": SymmetryCalculator(adapter, symmetrize="project"),
        "monitor10": SymmetryCalculator(adapter, monitor=Monitor(every=10, rotations=2, seed=0)),
        "monitor1": SymmetryCalculator(adapter, monitor=Monitor(every=1, rotations=2, seed=0)),
        "monitor10_separate": SymmetryCalculator(
            adapter, monitor=SeparateDraws(every=10, rotations=2, seed=0)
        ),
        "physics": SymmetryCalculator(adapter, monitor=Monitor(every=0)),
        "export_none": MetatomicCalculator(exported[None]),
        "export_monitor10": MetatomicCalculator(exported[10]),
        "export_monitor1": MetatomicCalculator(exported[1]),
    }


def same_results(calcs: dict, atoms) -> dict:
    """Largest differences of energy/forces/stress from ``metatomic`` on ``atoms``."""
    ref = calcs["metatomic"]
    ref.calculate(atoms.copy(), ["energy", "forces", "stress"], all_changes)
    diffs = {}
    for name in ("none", "export_none"):
        calc = calcs[name]
        calc.calculate(atoms.copy(), ["energy", "forces", "stress"], all_changes)
        diffs[name] = {
            key: float(np.abs(np.asarray(calc.results[key]) - ref.results[key]).max())
            for key in ("energy", "forces", "stress")
        }
    return diffs


def run_size(n_atoms: int, adapter, path: str, args, rng, folder: str) -> dict:
    template = models.cual_cell(REPEATS[n_atoms], seed=0, rattle=0.05)
    thermalize_momenta(template, temperature_K=300, rng=np.random.default_rng(1))
    check = make_variants(adapter, path, folder)
    diffs = same_results(check, template)
    calcs = make_variants(adapter, path, folder)
    dyns = {}
    for name, calc in calcs.items():
        atoms = template.copy()
        atoms.calc = calc
        dyns[name] = VelocityVerlet(atoms, timestep=2.0 * units.fs)
        dyns[name].run(args.warmup)
    names = list(calcs)
    cpu = {name: [] for name in names}
    wall = {name: [] for name in names}
    loads = []
    for _ in range(args.rounds):
        for name in rng.permutation(names):
            w0, c0 = time.perf_counter(), time.process_time()
            dyns[name].run(args.steps)
            cpu[name].append((time.process_time() - c0) / args.steps)
            wall[name].append((time.perf_counter() - w0) / args.steps)
        loads.append(load_average())
        print(
            f"  {n_atoms} atoms: round {len(loads)}/{args.rounds}, load {loads[-1]:.2f}", flush=True
        )

    def paired(times: dict, name: str, base: str) -> float:
        return statistics.median(a / b for a, b in zip(times[name], times[base]))

    pairs = {name: "metatomic" for name in names}
    pairs.update({"export_monitor10": "export_none", "export_monitor1": "export_none"})
    checks = {
        name: sum(1 for row in calcs[name].monitor.history if "a2_forces" in row)
        for name in ("monitor10", "monitor1", "monitor10_separate")
    }
    return {
        "n_atoms": n_atoms,
        "evaluations": args.warmup + 1 + args.rounds * args.steps,
        "checks": checks,
        "load_avg_per_round": loads,
        "monitor10_joined_over_separate_cpu": paired(cpu, "monitor10", "monitor10_separate"),
        "max_diff_vs_metatomic": diffs,
        "variants": {
            name: {
                "baseline": pairs[name],
                "cpu_ms_per_step": 1e3 * statistics.median(cpu[name]),
                "wall_ms_per_step": 1e3 * statistics.median(wall[name]),
                "cpu_ratio": paired(cpu, name, pairs[name]),
                "wall_ratio": paired(wall, name, pairs[name]),
                "cpu_ratio_to_metatomic": paired(cpu, name, "metatomic"),
                "cpu_s_per_step": cpu[name],
                "wall_s_per_step": wall[name],
            }
            for name in names
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed segment")
    parser.add_argument("--warmup", type=int, default=12, help="untimed steps per variant")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 108], choices=[32, 108])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="32 atoms, 2 rounds of 10 steps")
    parser.add_argument("--json", default=None, help="default: results/bench_monitor[_quick].json")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps, args.warmup, args.sizes = 2, 10, 2, [32]
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # a monitor may warn on a noisy baseline; timing only
    path = models.shipped_model(MODEL)
    adapter = models.load(path)
    rng = np.random.default_rng(0)
    start_load = load_average()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} cpus, "
        f"{args.rounds} rounds x {args.steps} steps, load {start_load:.2f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as folder:
        sizes = [run_size(n, adapter, path, args, rng, folder) for n in args.sizes]

    print("\nms per step (median) and ratio to the baseline (median of paired rounds):")
    header = f"{'variant':<19} {'baseline':<12}"
    for size in sizes:
        header += f" | {size['n_atoms']:>3} atoms: cpu ms  cpu x  wall x"
    print(header)
    for name in sizes[0]["variants"]:
        line = f"{name:<19} {sizes[0]['variants'][name]['baseline']:<12}"
        for size in sizes:
            v = size["variants"][name]
            line += f" |       {v['cpu_ms_per_step']:>7.1f} {v['cpu_ratio']:>6.3f} {v['wall_ratio']:>7.3f}"
        print(line)
    goals = []
    for name, base, goal in GOALS:
        for size in sizes:
            ratio = size["variants"][name]["cpu_ratio"]
            goals.append(
                {
                    "variant": name,
                    "baseline": base,
                    "n_atoms": size["n_atoms"],
                    "goal": goal,
                    "cpu_ratio": ratio,
                    "wall_ratio": size["variants"][name]["wall_ratio"],
                    "met": ratio <= goal,
                }
            )
    print()
    for g in goals:
        print(
            f"{g['variant']}/{g['baseline']} at {g['n_atoms']} atoms: {g['cpu_ratio']:.3f}x "
            f"(goal <= {g['goal']}x: {'met' if g['met'] else 'NOT met'})"
        )
    for size in sizes:
        print(
            f"{size['n_atoms']} atoms: max |dF| none vs metatomic "
            f"{size['max_diff_vs_metatomic']['none']['forces']:.1e} eV/A; checks "
            f"{size['checks']} in {size['evaluations']} evaluations; monitor10 joined/separate "
            f"{size['monitor10_joined_over_separate_cpu']:.3f}x"
        )
    end_load = load_average()
    out = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_avg_1min_start": start_load,
        "load_avg_1min_end": end_load,
        "model": MODEL,
        "timestep_fs": 2.0,
        "temperature_K": 300,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "warmup_steps": args.warmup,
        "sizes": sizes,
        "goals": goals,
    }
    json_path = pathlib.Path(
        args.json or RESULTS / f"bench_monitor{'_quick' if args.quick else ''}.json"
    )
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(out, indent=1))
    print(f"load {start_load:.2f} -> {end_load:.2f}; wrote {json_path}")


if __name__ == "__main__":
    main()
