"""Is the per-atom equivariance error a free uncertainty? A against LLPR and a committee.

Truth: EMT (the shipped PET, symmd/data/pet-emt-cual.pt, was trained on EMT
labels of rattled fcc Cu/Al). Every structure here is one the model never saw:

- held-out EMT frames (test_periodic.xyz of benchmarks/uncertainty_models.sh,
  seed 12345);
- frames of Langevin MD of the shipped PET (raw, 2 fs) at 600-3000 K and the
  last ``--approach`` steps before the collapse of the hot runs.

Predicted per-atom force uncertainties, all against |F_PET - F_EMT| (eV/A):

- ``A (2 draws)``: what the Monitor computes, the square root of the
  unbiased variance of the back-rotated forces over 2 Haar-random O(3)
  draws (fresh draws per frame);
- ``A (degree 7)``: its exact value from symmd's degree-7 rule (344 copies);
- ``LLPR``: metatrain's ``llpr`` on the shipped model's checkpoint; the force
  spread of its last-layer ensemble (forces by autograd of each member's
  energy), norm over xyz of the per-component standard deviation;
- ``ensemble``: 4 PETs of the shipped recipe with seeds 1-4; the DP-GEN
  force deviation sqrt(<|F_i - <F_i>|^2>) over the members.

Reported: Spearman and ROC-AUC (error > 0.1 eV/A) per atom and per frame
(largest value over the atoms), a calibration figure, the cost of one check
relative to a plain evaluation, the set-up cost, and the early warning:
levels calibrated on held-out data only (calib_periodic.xyz, seed 777, and
MD at 300 and 600 K with their own seeds): hi = just above the largest frame
value there; lead time before overlap (a pair closer than 0.4 x the sum of
covalent radii) over ``--hot-seeds`` hot runs and false alarms over
``--stable-seeds`` runs at 300-600 K, every signal checked every ``--check``
steps on the same frames.

    bash benchmarks/uncertainty_models.sh /tmp/symmd_uncertainty   # models + data
    python benchmarks/uncertainty.py --models /tmp/symmd_uncertainty

MD, labels and signals are cached under ``--models``/bench, so an interrupted
run resumes. Run with OMP_NUM_THREADS=1 on a shared machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time
import warnings

import ase.io
import numpy as np
import torch
from ase import units
from ase.calculators.emt import EMT
from ase.data import covalent_radii
from ase.md.langevin import Langevin

from symmd import SymmetryCalculator, metrics, models, o3
from symmd._md_command import thermalize
from symmd.ranking import rank_scores
from symmd.uncertainty import alarm_level, frame_max, trust_levels

ROOT = pathlib.Path(__file__).resolve().parent.parent
SIGNALS = ("A (2 draws)", "A (degree 7)", "LLPR", "ensemble")
WARNING_SIGNALS = ("A (2 draws)", "LLPR", "ensemble")
OVERLAP = 0.4  # fraction of the sum of covalent radii: the collapse
TOLERANCE = 0.1  # eV/A: an atom (frame) is wrong above it


# -- MD of the shipped PET ---------------------------------------------------
def min_ratio(atoms) -> float:
    """Shortest distance over the sum of covalent radii (periodic images included)."""
    if not np.isfinite(atoms.positions).all():
        return 0.0
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    r = covalent_radii[atoms.numbers]
    return float((d / (r[:, None] + r[None])).min())


def md_run(adapter, temperature: float, seed: int, steps: int, check: int, stop: bool) -> dict:
    """Langevin MD (2 fs, 0.02 1/fs) of the raw PET from a rattled 32-atom cell;
    frames every ``check`` steps (EMT-labelled), the distance ratio every step,
    until ``steps`` or (``stop``) the overlap."""
    atoms = models.cual_cell(seed=seed, rattle=0.02)
    atoms.calc = SymmetryCalculator(adapter, seed=seed)
    rng = np.random.default_rng(seed)
    thermalize(atoms, temperature, rng)
    dyn = Langevin(
        atoms, 2 * units.fs, temperature_K=temperature, friction=0.02 / units.fs, fixcm=False,
        rng=rng,
    )  # fmt: skip
    frames, ratios, overlap = [], [], None
    for step in range(steps + 1):
        if step:
            dyn.run(1)
        ratio = min_ratio(atoms)
        ratios.append(ratio)
        if ratio < OVERLAP:
            overlap = step
            if stop:
                break
        if step % check == 0:
            frame = atoms.copy()
            frame.info.update(step=step, temperature=temperature, seed=seed)
            frames.append(frame)
    for frame in frames:  # labels: EMT forces
        if np.isfinite(frame.positions).all():
            frame.calc = EMT()
            frame.arrays["emt_forces"] = frame.get_forces()
            frame.calc = None
        else:
            frame.arrays["emt_forces"] = np.full((len(frame), 3), np.nan)
    return {"frames": frames, "ratios": ratios, "overlap": overlap}


def cached_run(cache: pathlib.Path, name: str, make) -> dict:
    xyz, meta = cache / f"{name}.xyz", cache / f"{name}.json"
    if xyz.exists() and meta.exists():
        info = json.loads(meta.read_text())
        return {"frames": ase.io.read(xyz, ":"), **info}
    t0 = time.perf_counter()
    run = make()
    ase.io.write(xyz, run["frames"], format="extxyz")
    info = {"ratios": run["ratios"], "overlap": run["overlap"], "seconds": time.perf_counter() - t0}
    meta.write_text(json.dumps(info))
    print(f"  {name}: {len(run['frames'])} frames, overlap {run['overlap']}", flush=True)
    return {"frames": run["frames"], **info}


# -- the signals -----------------------------------------------------------------
def rotated(atoms, rot: np.ndarray):
    new = atoms.copy()
    new.positions = atoms.positions @ rot.T
    new.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    return new


def a_two_draws(adapter, frames, rng) -> np.ndarray:
    """The monitor's estimate, fresh draws per frame: sqrt(|z_1 - z_2|^2 / 2)
    per atom, z_j = F(g_j x) R_j (the m = 2 sample variance), one batched call."""
    copies, rots = [], []
    for frame in frames:
        q = o3.random_o3(2, rng)
        for rot in q.rotations.numpy():
            copies.append(rotated(frame, rot))
            rots.append(rot)
    forces = models.evaluate_rotated(
        adapter, copies, torch.eye(3, dtype=torch.float64), ("forces",)
    )
    out, start = [], 0
    f = forces["forces"][0].cpu().numpy()
    for k, frame in enumerate(frames):
        n = len(frame)
        z1 = f[start : start + n] @ rots[2 * k]
        z2 = f[start + n : start + 2 * n] @ rots[2 * k + 1]
        out.append(np.sqrt(((z1 - z2) ** 2).sum(-1) / 2))
        start += 2 * n
    return np.concatenate(out)


def a_exact(adapter, frames, degree: int = 7) -> np.ndarray:
    q = o3.quadrature(degree)
    out = []
    for frame in frames:
        u = models.evaluate_rotated(adapter, frame, q, ("forces",))["forces"]
        out.append(metrics.equivariance_error(u, q, "vector").cpu().numpy())
    return np.concatenate(out)


def raw_forces(adapter, frames) -> np.ndarray:
    eye = torch.eye(3, dtype=torch.float64)
    return models.evaluate_rotated(adapter, frames, eye, ("forces",))["forces"][0].cpu().numpy()


def deviation(members: np.ndarray) -> np.ndarray:
    """DP-GEN force deviation per atom of ``members [M, N, 3]``: sqrt(<|F - <F>|^2>)."""
    spread = members - members.mean(0)
    return np.sqrt((spread**2).sum(-1).mean(0))


class LLPR:
    """The exported LLPR model: forces of every member of its last-layer ensemble."""

    def __init__(self, path: pathlib.Path):
        from metatomic_ase import MetatomicCalculator

        self.calc = MetatomicCalculator(str(path), check_consistency=False)
        self.members = None

    def forces(self, frames, batch: int = 16) -> np.ndarray:
        from metatomic.torch import ModelOutput

        request = {
            "energy_ensemble": ModelOutput(
                unit="eV", sample_kind="system", explicit_gradients=["positions"]
            )
        }
        out = []
        for start in range(0, len(frames), batch):
            result = self.calc.run_model(frames[start : start + batch], request)
            grad = result["energy_ensemble"].block().gradient("positions").values
            out.append(-grad.detach().to(torch.float64).cpu().numpy().transpose(2, 0, 1))
        return np.concatenate(out, axis=1)  # [M, N, 3]


def cached_signals(cache, name, frames, adapter, ensemble, llpr, seed, exact) -> dict:
    """Truth and every signal of ``frames``, each computed once and kept in
    ``cache/name.signals.npz``; the ensemble and LLPR only once their models
    exist (``None``: skipped for now)."""
    path = cache / f"{name}.signals.npz"
    data = dict(np.load(path)) if path.exists() else {}
    todo = {
        "error": lambda: np.linalg.norm(
            raw_forces(adapter, frames) - np.concatenate([f.arrays["emt_forces"] for f in frames]),
            axis=1,
        ),
        "frame": lambda: np.repeat(np.arange(len(frames)), [len(f) for f in frames]),
        "A (2 draws)": lambda: a_two_draws(adapter, frames, np.random.default_rng(seed)),
    }
    if exact:
        todo["A (degree 7)"] = lambda: a_exact(adapter, frames)
    if ensemble is not None:
        todo["ensemble"] = lambda: deviation(np.stack([raw_forces(m, frames) for m in ensemble]))
    if llpr is not None:
        todo["LLPR"] = lambda: deviation(llpr.forces(frames))
    for key, make in todo.items():
        if key not in data:
            t0 = time.perf_counter()
            data[key] = make()
            np.savez(path, **data)
            took = time.perf_counter() - t0
            print(f"  {name}: {key} of {len(frames)} frames in {took:.0f} s", flush=True)
    return data


def joined(parts: list) -> dict:
    out, offset = {}, 0
    for part in parts:
        for key, value in part.items():
            value = value + offset if key == "frame" else value
            out.setdefault(key, []).append(value)
        offset += int(part["frame"].max()) + 1
    return {k: np.concatenate(v) for k, v in out.items()}


def scores(data: dict, names) -> dict:
    frame_error = frame_max(data["error"], data["frame"])
    out = {}
    for name in names:
        if name in data:
            out[name] = {
                "atom": rank_scores(data[name], data["error"], TOLERANCE),
                "frame": rank_scores(frame_max(data[name], data["frame"]), frame_error, TOLERANCE),
            }
    return out


def top_decile(data: dict, name: str) -> dict:
    """Median predicted value and median true error of the atoms in the top
    tenth of the prediction: how far the signal is from the error's scale."""
    top = data[name] >= np.quantile(data[name], 0.9)
    predicted, error = float(np.median(data[name][top])), float(np.median(data["error"][top]))
    return {"median_predicted": predicted, "median_error": error, "ratio": error / predicted}


# -- cost ------------------------------------------------------------------------
def timings(adapter, ensemble, llpr, repeats: int) -> dict:
    """Median time of one check of each signal on a 32-atom cell, and its ratio
    to a plain evaluation (energy and forces), interleaved repeats after
    warm-up; the degree-7 rule (an offline reference, 344 copies) gets 3."""
    frame = models.cual_cell(seed=0, rattle=0.05)
    eye = torch.eye(3, dtype=torch.float64)
    q7 = o3.quadrature(7)
    rng = np.random.default_rng(0)
    props = ("energy", "forces")
    calls = {
        "plain": lambda: models.evaluate_rotated(adapter, frame, eye, props),
        "A (2 draws)": lambda: models.evaluate_rotated(adapter, frame, o3.random_o3(2, rng), props),
        "A (degree 7)": lambda: models.evaluate_rotated(adapter, frame, q7, props),
        "LLPR": lambda: llpr.forces([frame]),
        "ensemble": lambda: [models.evaluate_rotated(m, frame, eye, props) for m in ensemble],
    }
    for name, call in calls.items():  # TorchScript warm-up
        for _ in range(1 if name == "A (degree 7)" else 3):
            call()
    times: dict = {k: [] for k in calls}
    for rep in range(repeats):
        for name, call in calls.items():
            if name == "A (degree 7)" and rep >= 3:
                continue
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
    plain = float(np.median(times["plain"]))
    return {
        name: {"ms": 1e3 * float(np.median(t)), "ratio": float(np.median(t)) / plain}
        for name, t in times.items()
    }


def setup_seconds(models_dir: pathlib.Path) -> dict:
    def seconds(pattern):
        total = 0.0
        for path in models_dir.glob(pattern):
            total += float(path.read_text().split(":")[1].split()[0])
        return total

    return {
        "A (2 draws)": 0.0,
        "A (degree 7)": 0.0,
        "LLPR": seconds("llpr/time.txt"),
        "ensemble": seconds("ensemble/seed_*/time.txt"),
    }


# -- early warning ---------------------------------------------------------------
def first_at_or_above(values: np.ndarray, steps: np.ndarray, level: float):
    hit = np.nonzero(values >= level)[0]
    return int(steps[hit[0]]) if hit.size else None


def warning(calibration: dict, hot: list, stable: list, check: int, margins) -> dict:
    """Lead time and false alarms of every signal at the level ``margin`` x
    (just above the largest frame value of the held-out calibration frames).
    A hot run that is not flagged before its overlap counts a lead of 0."""
    rows = []
    for name in WARNING_SIGNALS:
        top = alarm_level(frame_max(calibration[name], calibration["frame"]))
        for margin in margins:
            level = margin * top
            leads, flags = [], []
            for run in hot:
                values = frame_max(run["signals"][name], run["signals"]["frame"])
                steps = np.array([f.info["step"] for f in run["frames"]])
                before = steps < run["overlap"] if run["overlap"] is not None else steps >= 0
                flag = first_at_or_above(values[before], steps[before], level)
                flags.append(flag)
                if run["overlap"] is not None:
                    leads.append(run["overlap"] - flag if flag is not None else 0)
            alarms = [
                int((frame_max(r["signals"][name], r["signals"]["frame"]) >= level).sum())
                for r in stable
            ]
            rows.append(
                {
                    "signal": name,
                    "margin": margin,
                    "level": level,
                    "first_flag": flags,
                    "leads": leads,
                    "median_lead": float(np.median(leads)) if leads else None,
                    "flagged_before_overlap": int(sum(f is not None for f in flags)),
                    "false_alarm_runs": int(sum(a > 0 for a in alarms)),
                    "false_alarm_checks": alarms,
                }
            )
    # the monitor's physical check (every step): min distance below 0.6 x covalent sum
    leads, flags = [], []
    for run in hot:
        hit = np.nonzero(np.array(run["ratios"]) < 0.6)[0]
        flags.append(int(hit[0]) if hit.size else None)
        if run["overlap"] is not None:
            leads.append(run["overlap"] - int(hit[0]) if hit.size else 0)
    rows.append(
        {
            "signal": "min_distance",
            "margin": None,
            "level": 0.6,
            "first_flag": flags,
            "leads": leads,
            "median_lead": float(np.median(leads)) if leads else None,
            "flagged_before_overlap": int(sum(f is not None for f in flags)),
            "false_alarm_runs": int(sum((np.array(r["ratios"]) < 0.6).any() for r in stable)),
            "false_alarm_checks": [int((np.array(r["ratios"]) < 0.6).sum()) for r in stable],
        }
    )
    return {
        "check_every": check,
        "overlap_steps": [run["overlap"] for run in hot],
        "stable_runs": len(stable),
        "stable_checks": int(sum(len(r["frames"]) for r in stable)),
        "calibration_frames": int(calibration["frame"].max()) + 1,
        "rows": rows,
    }


# -- figure ----------------------------------------------------------------------
def plot(sets: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SIGNALS), figsize=(4 * len(SIGNALS), 4), sharey=True)
    colors = {"held-out EMT": "tab:blue", "hot MD": "tab:orange"}
    for ax, name in zip(axes, SIGNALS):
        for label, data in sets.items():
            x, y = data[name], data["error"]
            ok = (x > 0) & (y > 0)
            if ok.sum() < 20:
                continue
            ax.scatter(x[ok], y[ok], s=2, alpha=0.25, color=colors[label], rasterized=True)
            edges = np.quantile(x[ok], np.linspace(0, 1, 11))
            centre, median = [], []
            for lo, hi in zip(edges[:-1], edges[1:]):
                sel = ok & (x >= lo) & (x <= hi)
                if sel.sum() > 5:
                    centre.append(np.sqrt(lo * hi))
                    median.append(np.median(y[sel]))
            ax.plot(centre, median, "-o", color=colors[label], ms=3, label=f"{label} (bin median)")
        ax.axhline(TOLERANCE, color="grey", ls=":", lw=1)
        x = np.concatenate([d[name][d[name] > 0] for d in sets.values() if name in d])
        lims = [0.7 * x.min(), 1.4 * x.max()] if x.size else [1e-3, 1.0]
        ax.plot(lims, lims, color="k", lw=0.6, ls="--", label="predicted = true")
        ax.set(xscale="log", yscale="log", xlim=lims, ylim=[1e-3, 100], title=name)
        ax.set_xlabel("predicted (eV/A)")
    axes[0].set_ylabel("true error |F_PET - F_EMT| (eV/A)")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# -- main ------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="/tmp/symmd_uncertainty", type=pathlib.Path)
    parser.add_argument("--check", type=int, default=10, help="steps between two checks")
    parser.add_argument("--hot-temperature", type=float, default=6000.0)
    parser.add_argument("--hot-seeds", type=int, default=8)
    parser.add_argument("--hot-steps", type=int, default=600)
    parser.add_argument(
        "--approach", type=int, default=20, help="hot MD set: checks this many steps before overlap"
    )
    parser.add_argument(
        "--stable-temperatures", type=float, nargs="+", default=[300, 400, 500, 600]
    )
    parser.add_argument("--stable-seeds", type=int, default=8)
    parser.add_argument("--stable-steps", type=int, default=500)
    parser.add_argument(
        "--accuracy-temperatures", type=float, nargs="+", default=[600, 1200, 2000, 3000]
    )
    parser.add_argument("--accuracy-steps", type=int, default=100)
    parser.add_argument("--accuracy-every", type=int, default=20)
    parser.add_argument("--calibration-steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--margins", type=float, nargs="+", default=[1.0, 2.0],
        help="warning levels: these multiples of the largest held-out calibration value",
    )  # fmt: skip
    parser.add_argument("--heldout-frames", type=int, default=20, help="of test_periodic.xyz")
    parser.add_argument(
        "--json", type=pathlib.Path, default=ROOT / "benchmarks/results/uncertainty.json"
    )
    parser.add_argument("--plot", type=pathlib.Path, default=ROOT / "docs/figures/uncertainty.png")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    cache = args.models / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    adapter = models.load(models.shipped_model())
    paths = [args.models / f"ensemble/seed_{s}/model.pt" for s in (1, 2, 3, 4)]
    ensemble = [models.load(str(p)) for p in paths] if all(p.exists() for p in paths) else None
    llpr_path = args.models / "llpr/model.pt"
    llpr = LLPR(llpr_path) if llpr_path.exists() else None

    def run(name, temperature, seed, steps, stop):
        return cached_run(
            cache, name, lambda: md_run(adapter, temperature, seed, steps, args.check, stop)
        )

    def sig(name, frames, seed, exact=False):
        return cached_signals(cache, name, frames, adapter, ensemble, llpr, seed, exact)

    def labelled(path, count=None):
        frames = ase.io.read(path, ":" if count is None else f":{count}")
        for frame in frames:
            frame.arrays["emt_forces"] = frame.get_forces()
        return frames

    print("MD of the shipped PET, EMT labels, signals", flush=True)
    hot = [
        run(f"hot_{s}", args.hot_temperature, s, args.hot_steps, True)
        for s in range(args.hot_seeds)
    ]
    # accuracy sets (the same atoms for every signal, the exact A included)
    sets = {
        "held-out EMT": sig(
            "heldout_emt",
            labelled(args.models / "test_periodic.xyz", args.heldout_frames),
            1300,
            True,
        )
    }
    hot_md = []
    for k, temperature in enumerate(args.accuracy_temperatures):
        r = run(f"accuracy_{k}", temperature, 300 + k, args.accuracy_steps, True)
        frames = [
            f
            for f in r["frames"]
            if f.info["step"] % args.accuracy_every == 0
            and (r["overlap"] is None or f.info["step"] < r["overlap"])
        ]
        hot_md.append(sig(f"accuracy_{k}", frames, 1400 + k, True))
    for seed, r in enumerate(hot):
        if r["overlap"] is None:
            continue
        frames = [
            f for f in r["frames"] if r["overlap"] - args.approach <= f.info["step"] < r["overlap"]
        ]
        hot_md.append(sig(f"approach_{seed}", frames, 1500 + seed, True))
    sets["hot MD"] = joined(hot_md)
    sets["all"] = joined([sets["held-out EMT"], sets["hot MD"]])
    # early warning: calibration (held-out) and test runs
    calibration = [sig("calib_emt", labelled(args.models / "calib_periodic.xyz"), 1200)]
    for k, temperature in enumerate((300.0, 600.0)):
        r = run(f"calib_md_{k}", temperature, 200 + k, args.calibration_steps, False)
        calibration.append(sig(f"calib_md_{k}", r["frames"], 1210 + k))
    calibration = joined(calibration)
    for seed, r in enumerate(hot):
        r["signals"] = sig(f"hot_{seed}", r["frames"], 1000 + seed)
    stable = []
    for k in range(args.stable_seeds):
        temperature = args.stable_temperatures[k % len(args.stable_temperatures)]
        r = run(f"stable_{k}", temperature, 100 + k, args.stable_steps, False)
        r["signals"] = sig(f"stable_{k}", r["frames"], 1100 + k)
        stable.append(r)
    if ensemble is None or llpr is None:
        print(f"MD and A done; the ensemble ({paths[0].parent.parent}) or LLPR ({llpr_path}) "
              "model is missing: make it with benchmarks/uncertainty_models.sh and run again")  # fmt: skip
        return

    print("cost", flush=True)
    cost = timings(adapter, ensemble, llpr, args.repeats)
    result = {
        "config": {
            k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()
        },
        "tolerance": TOLERANCE,
        "sets": {
            label: {
                "frames": int(d["frame"].max()) + 1,
                "atoms": int(d["error"].size),
                "median_error": float(np.median(d["error"])),
                "atoms_above": int((d["error"] > TOLERANCE).sum()),
            }
            for label, d in sets.items()
        },  # fmt: skip
        "accuracy": {label: scores(d, SIGNALS) for label, d in sets.items()},
        "calibration": {name: top_decile(sets["hot MD"], name) for name in SIGNALS},
        "cost": cost,
        "setup_s": setup_seconds(args.models),
        "llpr_members": int(llpr.forces([models.cual_cell()]).shape[0]),
        "warning": warning(calibration, hot, stable, args.check, args.margins),
    }
    frames_cal = frame_max(calibration["error"], calibration["frame"])
    result["trust_levels"] = {}
    for name in WARNING_SIGNALS:  # the helper on the held-out calibration frames
        try:
            levels = trust_levels(frame_max(calibration[name], calibration["frame"]), frames_cal)
            result["trust_levels"][name] = dataclasses.asdict(levels)
        except ValueError as error:
            result["trust_levels"][name] = {"error": str(error)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    plot({k: v for k, v in sets.items() if k != "all"}, args.plot)
    report(result)
    print(f"wrote {args.json} and {args.plot}")


def report(result: dict) -> None:
    for label, entry in result["accuracy"].items():
        info = result["sets"][label]
        print(
            f"\n{label}: {info['frames']} frames, {info['atoms']} atoms, {info['atoms_above']} above {TOLERANCE} eV/A"
        )
        print(f"{'signal':<14} {'rho atom':>9} {'AUC atom':>9} {'rho frame':>10} {'AUC frame':>10}")
        for name, s in entry.items():
            print(f"{name:<14} {s['atom']['spearman']:9.3f} {s['atom']['roc_auc']:9.3f} "
                  f"{s['frame']['spearman']:10.3f} {s['frame']['roc_auc']:10.3f}")  # fmt: skip
    print(f"\n{'signal':<14} {'check / plain':>14} {'set-up (s)':>11}")
    for name, c in result["cost"].items():
        print(f"{name:<14} {c['ratio']:14.2f} {result['setup_s'].get(name, 0.0):11.0f}")
    w = result["warning"]
    print(f"\nearly warning, check every {w['check_every']} steps; overlap at {w['overlap_steps']}")
    for row in w["rows"]:
        print(
            f"{row['signal']:<14} x{row['margin']!s:<5} level {row['level']:.4g}  leads "
            f"{row['leads']} median {row['median_lead']}  false-alarm runs "
            f"{row['false_alarm_runs']} of {w['stable_runs']}"
        )


if __name__ == "__main__":
    main()
