"""GPU check: batched rotated copies, the exported averaged model and monitored
MD on a CUDA device (under 5 minutes on one GPU), or, small, on the CPU.

With the shipped PET ``pet-emt-cual`` (float32) on fcc Cu/Al cells
(``symmd.models.cual_cell``: 32, 108 and 500 atoms), on ``--device``:

1. ``batched``: ``evaluate_rotated`` of the whole rule of degree L (3 and 5:
   48 and 120 copies; energy, forces, stress) in the default chunk plan (all
   copies in one call on an accelerator) against a loop of single calls
   (``batch_size=1``: one model call per copy, the same shared neighbour
   list); copies per second of each, their ratio, the peak device memory
   (``torch.cuda.max_memory_allocated``, reset before each) and the largest
   force difference between the two (round-off).
2. ``export``: ``symmd.export(model, quadrature=3)`` run by
   ``metatomic_ase.MetatomicCalculator`` on the device, per call, against the
   raw model in the same calculator; peak device memory.
3. ``md``: VelocityVerlet (2 fs) with the plain ``MetatomicCalculator``,
   ``SymmetryCalculator`` ``"none"``, the same with ``Monitor(every=10,
   rotations=2)`` (draws in the step's batch), and the exported model with
   ``monitor_every=10`` in ``MetatomicCalculator``; interleaved rounds,
   median ms per step and the ratio to the plain calculator.

Times are medians of ``--repeats`` after two warm-up calls (CUDA synchronized
around every timed call). Writes JSON (default ``results/gpu_check.json``,
or ``results/gpu_check_cpu.json`` with ``--device cpu``).

    python benchmarks/gpu_check.py                       # CUDA, the full sizes
    python benchmarks/gpu_check.py --device cpu          # small: 32 atoms, L = 2
    python benchmarks/gpu_check.py --device cpu --json /tmp/gpu_check.json
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

import numpy as np
import torch
from ase import units
from ase.md.verlet import VelocityVerlet

import symmd
from symmd import Monitor, SymmetryCalculator, models, o3

MODEL = "pet-emt-cual"
RESULTS = pathlib.Path(__file__).parent / "results"
REPEATS = {32: 2, 108: 3, 500: 5}  # fcc cubic cell (4 atoms) repeated n x n x n
PROPS = ("energy", "forces", "stress")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device):
    if device.type != "cuda":
        return None  # no resettable peak on the CPU
    return torch.cuda.max_memory_allocated(device) / 2**20


def timed(fn, device: torch.device, repeats: int) -> tuple[float, object]:
    """Median seconds of ``fn()`` over ``repeats`` calls after two warm-up
    calls (TorchScript profiles the first and optimizes at the second), and
    its last result."""
    result = fn()
    result = fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def check_batched(adapter, n_atoms: int, degree: int, device, repeats: int) -> dict:
    atoms = models.cual_cell((REPEATS[n_atoms],) * 3, rattle=0.05)
    q = o3.quadrature(degree)
    out = {"n_atoms": n_atoms, "degree": degree, "copies": len(q)}
    forces = {}
    for name, batch_size in (("batched", None), ("loop", 1)):
        reset_peak(device)
        seconds, resp = timed(
            lambda b=batch_size: models.evaluate_rotated(adapter, atoms, q, PROPS, b),
            device,
            repeats,
        )
        forces[name] = resp["forces"]
        out[name] = {
            "s_per_call": seconds,
            "copies_per_s": len(q) / seconds,
            "model_calls": len(resp.plan),
            "peak_mib": peak_mib(device),
        }
    out["batched_over_loop_speed"] = out["loop"]["s_per_call"] / out["batched"]["s_per_call"]
    out["max_force_diff"] = float((forces["batched"] - forces["loop"]).abs().max())
    return out


def check_export(path: str, folder: str, n_atoms: int, device, repeats: int) -> dict:
    from ase.calculators.calculator import all_changes
    from metatomic_ase import MetatomicCalculator

    exported = os.path.join(folder, "average3.pt")
    if not os.path.exists(exported):
        symmd.export(path, exported, quadrature=3, seed=0)
    atoms = models.cual_cell((REPEATS[n_atoms],) * 3, rattle=0.05)
    out = {"n_atoms": n_atoms, "copies": len(o3.quadrature(3))}
    for name, model in (("raw", path), ("average3", exported)):
        calc = MetatomicCalculator(model, device=str(device))

        def call(calc=calc):
            calc.calculate(atoms.copy(), list(PROPS), all_changes)
            return calc.results["forces"]

        reset_peak(device)
        seconds, _ = timed(call, device, repeats)
        out[name] = {"s_per_call": seconds, "peak_mib": peak_mib(device)}
    out["average_over_raw"] = out["average3"]["s_per_call"] / out["raw"]["s_per_call"]
    return out


def check_md(path: str, adapter, folder: str, n_atoms: int, device, rounds: int, steps: int):
    from metatomic_ase import MetatomicCalculator

    exported = os.path.join(folder, "monitor10.pt")
    if not os.path.exists(exported):
        symmd.export(path, exported, symmetrize="none", monitor_every=10, seed=0)
    template = models.cual_cell((REPEATS[n_atoms],) * 3, rattle=0.05)
    rng = np.random.default_rng(1)
    template.set_momenta(rng.normal(scale=0.1, size=(len(template), 3)))  # ~300 K for Cu/Al
    calcs = {
        "plain": MetatomicCalculator(path, device=str(device)),
        "none": SymmetryCalculator(adapter),
        "monitor10": SymmetryCalculator(adapter, monitor=Monitor(every=10, rotations=2, seed=0)),
        "export_monitor10": MetatomicCalculator(exported, device=str(device)),
    }
    dyns = {}
    for name, calc in calcs.items():
        atoms = template.copy()
        atoms.calc = calc
        dyns[name] = VelocityVerlet(atoms, timestep=2.0 * units.fs)
        dyns[name].run(steps - 1)  # warm-up; then every segment holds one check in 10
    times: dict[str, list] = {name: [] for name in calcs}
    for r in range(rounds):
        for name in list(calcs)[r % len(calcs) :] + list(calcs)[: r % len(calcs)]:
            sync(device)
            start = time.perf_counter()
            dyns[name].run(steps)
            sync(device)
            times[name].append((time.perf_counter() - start) / steps)
    out = {"n_atoms": n_atoms, "steps_per_round": steps, "rounds": rounds}
    for name in calcs:
        ratio = statistics.median(a / b for a, b in zip(times[name], times["plain"]))
        out[name] = {"ms_per_step": 1e3 * statistics.median(times[name]), "vs_plain": ratio}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", choices=sorted(REPEATS))
    parser.add_argument("--degrees", type=int, nargs="+")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--md-rounds", type=int)
    parser.add_argument("--md-steps", type=int, default=10, help="steps per MD round")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible; use --device cpu")
    small = device.type == "cpu"
    sizes = args.sizes or ([32] if small else [32, 108, 500])
    degrees = args.degrees or ([2] if small else [3, 5])
    repeats = args.repeats or (1 if small else 3)
    rounds = args.md_rounds or (2 if small else 5)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # monitor warnings on a short, noisy baseline
    start = time.perf_counter()
    path = models.shipped_model(MODEL)
    adapter = models.load(path, device=device)
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "model": MODEL,
        "repeats": repeats,
    }
    print(f"{info['device_name']}, torch {torch.__version__}", flush=True)

    batched = []
    for n in sizes:
        for degree in degrees:
            row = check_batched(adapter, n, degree, device, repeats)
            batched.append(row)
            print(
                f"batched {n:>4} atoms L={degree} ({row['copies']} copies): "
                f"{row['batched']['copies_per_s']:.1f} copies/s in {row['batched']['model_calls']} "
                f"call(s) vs loop {row['loop']['copies_per_s']:.1f} copies/s "
                f"({row['batched_over_loop_speed']:.2f}x); peak {row['batched']['peak_mib']} MiB; "
                f"max dF {row['max_force_diff']:.1e}",
                flush=True,
            )
    with tempfile.TemporaryDirectory() as folder:
        export = [check_export(path, folder, n, device, repeats) for n in sizes]
        for row in export:
            print(
                f"export L=3 {row['n_atoms']:>4} atoms: {1e3 * row['average3']['s_per_call']:.1f} ms "
                f"vs raw {1e3 * row['raw']['s_per_call']:.1f} ms ({row['average_over_raw']:.1f}x); "
                f"peak {row['average3']['peak_mib']} MiB",
                flush=True,
            )
        md = [check_md(path, adapter, folder, n, device, rounds, args.md_steps) for n in sizes]
    for row in md:
        print(
            f"md {row['n_atoms']:>4} atoms: "
            + ", ".join(
                f"{k} {row[k]['ms_per_step']:.1f} ms ({row[k]['vs_plain']:.2f}x)"
                for k in ("plain", "none", "monitor10", "export_monitor10")
            ),
            flush=True,
        )
    info["seconds_total"] = time.perf_counter() - start
    out = {**info, "batched": batched, "export": export, "md": md}
    json_path = pathlib.Path(
        args.json or RESULTS / f"gpu_check{'_cpu' if device.type == 'cpu' else ''}.json"
    )
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(out, indent=1))
    print(f"{info['seconds_total']:.0f} s; wrote {json_path}")


if __name__ == "__main__":
    main()
