"""Averaging cost per copy against one raw call, by cell size and quadrature degree.

For fcc Cu/Al cells of 32, 108 and 256 atoms (``tests/conftest.py``'s
``cual_cell`` recipe: a = 3.7 A, 30 % Al, 0.1 A rattle, seeded) and quadrature
degrees 3, 5 and 7, one energy+forces+stress call of

* symmd ``SymmetryCalculator(symmetrize="average", quadrature=L)`` (default
  chunking, ``batch_size=None``),
* symmd ``SymmetryCalculator()`` (one raw evaluation of the same cell),
* metatomic-ase ``SymmetrizedCalculator(MetatomicCalculator(path), l_max=L,
  batch_size=B)`` with B = the largest chunk of symmd's plan, so that both
  work within the same memory bound (its default, all copies in one call,
  needs tens of GB from 108 atoms at L = 5 with this model),

is timed. Each case runs in its own process (so that its peak memory can be
read): the models are warmed up with 3 raw calls each (TorchScript settles
after ~3 runs of a graph, whatever the batch shape), then each method is
called ``--repeats`` times, interleaved (5 raw calls, symmd, peer), medians reported.
Peak memory is the increase of the process's peak RSS (``getrusage``) over
its value after the warm-up, read after the first symmd call and after the
first peer call (so the peer's figure is exact only when it exceeds
symmd's; otherwise it is reported as symmd's).

Goals (issue 16): symmd's time per copy <= 1.2x one raw call through symmd,
and peer time / symmd time >= 0.8 x (peer copies / symmd copies).

    python benchmarks/bench_scaling.py [--threads 2] [--repeats 3]
        [--sizes 32 108 256] [--degrees 3 5 7] [--max-peer-seconds 40]
        [--model pet-emt-cual|pet-default|PATH.pt] [--no-peer] [--json PATH]
    python benchmarks/bench_scaling.py --chunk-scan [--model ...] [--sizes ...]

``--model pet-default`` builds an untrained metatrain PET with the default
hyper-parameters (d_pet 128, 8 heads; ~10x the shipped model's cost per
atom), seeded, exported to a temporary file. The peer is skipped where its
estimated time per call (copies x raw time) exceeds ``--max-peer-seconds``.
``--chunk-scan`` instead times, with 1 thread and process CPU time, one
model call per chunk of 32 to 2048 atoms' worth of copies, the measurement
behind the CPU default of ``symmd.models.chunk_plan``.
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
import tempfile
import time

import numpy as np

RESULTS = pathlib.Path(__file__).parent / "results"
REPEATS = {32: (2, 2, 2), 108: (3, 3, 3), 256: (4, 4, 4)}
PROPS = ["energy", "forces", "stress"]


def make_cell(n_atoms: int, seed: int = 0):
    """fcc Cu (a = 3.7 A) repeated to ``n_atoms``, 30 % Al, rattled 0.1 A (seeded)."""
    import ase.build

    atoms = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True) * REPEATS[n_atoms]
    rng = np.random.default_rng(seed)
    atoms.numbers[rng.random(len(atoms)) < 0.3] = 13
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    return atoms


def default_pet(path: str) -> str:
    """Export an untrained default-size metatrain PET for Cu/Al (seeded) to ``path``."""
    import torch
    from metatrain.pet import PET
    from metatrain.utils.architectures import get_default_hypers
    from metatrain.utils.data import DatasetInfo
    from metatrain.utils.data.target_info import get_energy_target_info

    info = DatasetInfo(
        length_unit="angstrom",
        atomic_types=[13, 29],
        targets={"energy": get_energy_target_info("energy", {"unit": "eV"})},
    )
    torch.manual_seed(0)
    PET(get_default_hypers("pet")["model"], info).export().save(path)
    return path


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_case(args) -> dict:
    """One (size, degree) case in this process; returns its figures."""
    import torch
    from ase.calculators.calculator import all_changes

    from symmd import SymmetryCalculator, models

    torch.set_num_threads(args.threads)
    atoms = make_cell(args.case[0])
    degree = args.case[1]
    adapter = models.load(args.model_path)

    def call(calc) -> float:
        calc.reset()
        start = time.perf_counter()
        calc.calculate(atoms, PROPS, all_changes)
        return time.perf_counter() - start

    raw = SymmetryCalculator(adapter)
    average = SymmetryCalculator(adapter, symmetrize="average", quadrature=degree)
    plan = models.evaluate_rotated(adapter, atoms, average.quadrature.rotations[:1], ["energy"])
    pairs = sum(int(p.counts.sum()) for p in plan.pairs.values())
    plan = models.chunk_plan(len(average.quadrature), len(atoms), adapter.device, None, pairs)
    for _ in range(3):
        raw_s = call(raw)
    out = {
        "n_atoms": len(atoms),
        "degree": degree,
        "threads": torch.get_num_threads(),
        "symmd_copies": len(average.quadrature),
        "symmd_plan": plan,
    }
    peer = None
    if not args.no_peer:
        from metatomic_ase import MetatomicCalculator, SymmetrizedCalculator

        base = MetatomicCalculator(args.model_path)
        peer = SymmetrizedCalculator(base, l_max=degree, batch_size=max(plan))
        out["peer_copies"] = len(peer.quadrature_rotations) + 1
        out["peer_batch_size"] = max(plan)
        for _ in range(3):
            call(base)
        estimate = out["peer_copies"] * raw_s
        if estimate > args.max_peer_seconds:
            out["peer_skipped"] = f"estimated {estimate:.0f} s per call > {args.max_peer_seconds} s"
            peer = None
    times: dict[str, list] = {"raw": [], "symmd": [], "peer": []}
    baseline = peak_rss_mib()
    for i in range(args.repeats):
        times["raw"] += [call(raw) for _ in range(5)]  # cheap: 5 per round against noise
        times["symmd"].append(call(average))
        if i == 0:
            out["symmd_peak_mib"] = peak_rss_mib() - baseline
        if peer is not None:
            times["peer"].append(call(peer))
            if i == 0:
                out["peer_peak_mib"] = peak_rss_mib() - baseline
    med = {k: statistics.median(v) for k, v in times.items() if v}
    out.update(
        raw_s=med["raw"],
        symmd_s=med["symmd"],
        per_copy_s=med["symmd"] / out["symmd_copies"],
        per_copy_over_raw=med["symmd"] / out["symmd_copies"] / med["raw"],
        times=times,
    )
    if "peer" in med:
        out["peer_s"] = med["peer"]
        out["peer_over_symmd"] = med["peer"] / med["symmd"]
        out["required"] = 0.8 * out["peer_copies"] / out["symmd_copies"]
    return out


def chunk_scan(path: str, sizes, repeats: int) -> dict:
    """Process CPU time per copy against copies per call (1 thread), for the
    default-chunk choice: ``{n_atoms: {copies_per_call: seconds per copy}}``."""
    import torch

    from symmd import models, o3

    torch.set_num_threads(1)
    adapter = models.load(path)
    scan: dict = {}
    for n_atoms in sizes:
        atoms = make_cell(n_atoms)
        chunks = sorted({max(1, a // n_atoms) for a in (32, 64, 128, 256, 512, 1024, 2048)})
        seconds: dict = {b: [] for b in chunks}
        for i in range(repeats + 2):  # the first two rounds warm TorchScript up
            for b in chunks:
                rot = o3.haar(b, seed=i, inversion=False).rotations
                start = time.process_time()
                models.evaluate_rotated(adapter, atoms, rot, PROPS, batch_size=b)
                if i >= 2:
                    seconds[b].append((time.process_time() - start) / b)
        scan[n_atoms] = {b: statistics.median(v) for b, v in seconds.items()}
        for b, t in scan[n_atoms].items():
            print(
                f"{n_atoms:>5} atoms x {b:>3} = {n_atoms * b:>5} atoms/call: "
                f"{1e3 * t:7.1f} ms per copy, {t / scan[n_atoms][1]:.2f}x one copy per call",
                flush=True,
            )
    return scan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 108, 256])
    parser.add_argument("--degrees", type=int, nargs="+", default=[3, 5, 7])
    parser.add_argument("--max-peer-seconds", type=float, default=40.0)
    parser.add_argument("--model", default="pet-emt-cual")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--chunk-scan", action="store_true", help="time per copy against copies per call"
    )
    parser.add_argument("--case", type=int, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args)))
        return

    from symmd import models

    tmp = tempfile.TemporaryDirectory()
    if args.model == "pet-default":
        path = default_pet(os.path.join(tmp.name, "pet-default.pt"))
    elif args.model.endswith(".pt"):
        path = args.model
    else:
        path = models.shipped_model(args.model)
    if args.chunk_scan:
        scan = chunk_scan(path, args.sizes, args.repeats)
        json_path = pathlib.Path(args.json or RESULTS / f"bench_scaling_chunks_{args.model}.json")
        json_path.write_text(json.dumps({"model": args.model, "seconds_per_copy": scan}, indent=1))
        print(f"wrote {json_path}")
        return
    print(
        f"model {args.model}, {args.threads} threads, {args.repeats} repeats, "
        f"cpus {os.cpu_count()}, load avg {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    head = (
        f"{'atoms':>5} {'L':>2} {'copies':>6} {'plan':>9} {'s/call':>7} {'ms/copy':>8} "
        f"{'raw ms':>7} {'copy/raw':>8} {'MiB':>5} | {'peer cp':>7} {'peer s':>7} "
        f"{'MiB':>5} {'peer/symmd':>10} {'needed':>6}"
    )
    print(head, flush=True)
    cases = []
    for n_atoms in args.sizes:
        for degree in args.degrees:
            cmd = [sys.executable, __file__, "--case", str(n_atoms), str(degree)]
            cmd += ["--model-path", path, "--threads", str(args.threads)]
            cmd += ["--repeats", str(args.repeats), "--max-peer-seconds"]
            cmd += [str(args.max_peer_seconds)] + (["--no-peer"] if args.no_peer else [])
            # the child imports the same symmd as this process
            root = str(pathlib.Path(models.__file__).parents[2])
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode:
                raise RuntimeError(f"case {n_atoms} atoms, L={degree} failed:\n{done.stderr}")
            case = json.loads(done.stdout.strip().splitlines()[-1])
            cases.append(case)
            plan = case["symmd_plan"]
            line = (
                f"{n_atoms:>5} {degree:>2} {case['symmd_copies']:>6} "
                f"{f'{len(plan)}x{max(plan)}':>9} {case['symmd_s']:>7.2f} "
                f"{1e3 * case['per_copy_s']:>8.1f} {1e3 * case['raw_s']:>7.1f} "
                f"{case['per_copy_over_raw']:>8.2f} {case['symmd_peak_mib']:>5.0f} | "
            )
            if "peer_s" in case:
                line += (
                    f"{case['peer_copies']:>7} {case['peer_s']:>7.2f} "
                    f"{max(case['peer_peak_mib'], case['symmd_peak_mib']):>5.0f} "
                    f"{case['peer_over_symmd']:>10.2f} {case['required']:>6.2f}"
                )
            else:
                line += f"peer skipped: {case.get('peer_skipped', '--no-peer')}"
            print(line, flush=True)
    met_copy = all(c["per_copy_over_raw"] <= 1.2 for c in cases)
    met_peer = all(c["peer_over_symmd"] >= c["required"] for c in cases if "peer_s" in c)
    print(
        f"per copy <= 1.2x raw in every case: {met_copy}; peer/symmd >= 0.8 x copy ratio "
        f"where the peer ran: {met_peer}; load avg {os.getloadavg()[0]:.2f}"
    )
    out = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "model": args.model,
        "threads": args.threads,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "load_avg_1min_end": os.getloadavg()[0],
        "per_copy_within_1.2x_raw": met_copy,
        "peer_ratio_met": met_peer,
        "cases": cases,
    }
    name = "bench_scaling" + ("" if args.model == "pet-emt-cual" else f"_{args.model}")
    json_path = pathlib.Path(args.json or RESULTS / f"{pathlib.Path(name).stem}.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(out, indent=1))
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
