"""MD stability of direct (non-conservative) forces in each symmd mode, side by side.

The same starting structures, seeds and integrators for every mode:

- ``conservative``: forces and stress from the energy gradient (the baseline);
- ``direct``: the model's raw direct outputs (no backward pass);
- ``direct+project``: direct outputs with zero net force (and, for the
  cluster, zero net torque), the minimal-norm change (free);
- ``direct+average2``, ``direct+average3``: direct outputs twirled over the
  degree-2 / degree-3 rule (24 / 48 rotated copies, forward passes only);
  the twirl is equivariant but keeps the net force (and torque) of the
  model's equivariant part;
- ``direct+average2+project``: the degree-2 twirl, projected
  (``symmetrize="average+project"``);
- ``direct+mts``: i-PI multiple time stepping with two symmd-exported models
  (``benchmarks/ipi_mts.py``): projected direct forces in 4 inner steps of 1
  fs, the conservative correction every 4 fs.

Systems: a 55-atom Cu/Al cluster in vacuum and a 108-atom fcc Cu/Al cell.
Runs: NVE at 1 fs (300 K initial velocities), Langevin at 300 K and 900 K
(friction 0.02/fs), each for every seed. Seed s draws the Maxwell-Boltzmann
velocities (and seeds the Langevin noise); every mode starts from them.

Per run: the energy drift (slope of the total energy per atom, meV/atom/ps;
NVE), the temperature drift (K/ps, NVE), the time at which the total energy
has changed by a tenth of the initial kinetic energy (the work of the forces
against the model's energy: a 10% temperature drift at the least; NVE), the
change of momentum and angular
momentum since the start in thermal units (:mod:`symmd.conservation`) against
time, the time to failure (collapse below 0.6 x the sum of covalent radii,
non-finite values, or the running mean temperature over 100 fs above twice
the target), the first flag of a :class:`symmd.Monitor` (every step's
conservation and physical checks; the equivariance error every 50 steps),
and the wall time per step. A timing pass measures the cost of one force
evaluation per mode, interleaved, against conservative raw (and conservative
averaging against direct averaging).

Resumable: each finished run is appended as one JSON line to
``stability_runs.jsonl`` and skipped when the command is run again with the
same settings; independent runs go to a pool of ``--jobs`` processes (one
thread each); the rotated copies of an averaged step are batched by the
calculator. The total cost is estimated, from the timing pass, before the
runs start (``--estimate`` stops there).

    python benchmarks/stability.py [--quick] [--jobs 2] [--model PATH]
        [--steps 5000] [--langevin-steps N] [--average-steps N] [--seeds 4] [--systems cluster bulk]
        [--ensembles nve langevin300 langevin900] [--modes ...] [--out DIR]

Writes ``DIR/stability.json`` (``stability_quick.json`` with ``--quick``) and
``DIR/stability.png`` (drift curves per mode, means over seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

MODES = (
    "conservative",
    "direct",
    "direct+project",
    "direct+average2",
    "direct+average3",
    "direct+average2+project",
    "direct+mts",
)
#: timing only: the cost of conservative averaging, against direct averaging
COST_ONLY = ("conservative+average2", "conservative+average3")
ENSEMBLES = {"nve": None, "langevin300": 300.0, "langevin900": 900.0}
SYSTEMS = ("cluster", "bulk")
DEFAULT_MODEL = "pet-emt-cual-direct"
TIMESTEP_FS = 1.0
FRICTION_PER_FS = 0.02
NVE_TEMPERATURE = 300.0
MTS_INNER, MTS_OUTER_FS = 4, 4.0
FAILURE_WINDOW = 100  # steps of the running-mean temperature


# -- inputs --------------------------------------------------------------------------


def structure(name: str):
    """The starting structure: a 55-atom cuboctahedral Cu/Al cluster cut from
    fcc (no periodicity) or a 108-atom fcc Cu/Al cell; ~30% Al and a 0.05 A
    rattle, both seeded; the same for every mode and seed."""
    import ase.build

    from symmd.models import cual_cell

    if name == "bulk":
        return cual_cell((3, 3, 3), seed=0, rattle=0.05)
    if name != "cluster":
        raise ValueError(f"unknown system {name!r}; choose among {list(SYSTEMS)}")
    bulk = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True) * (5, 5, 5)
    centre = bulk.positions[
        np.argmin(np.linalg.norm(bulk.positions - bulk.cell.sum(0) / 2, axis=1))
    ]
    order = np.argsort(np.linalg.norm(bulk.positions - centre, axis=1), kind="stable")[:55]
    atoms = bulk[order]
    atoms.cell, atoms.pbc = np.zeros((3, 3)), False
    rng = np.random.default_rng(0)
    atoms.numbers[rng.random(len(atoms)) < 0.3] = 13
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape) - centre
    return atoms


def initial_state(system: str, temperature: float, seed: int):
    """The structure with seeded Maxwell-Boltzmann velocities at ``temperature``."""
    from symmd._md_command import thermalize

    atoms = structure(system)
    thermalize(atoms, temperature, np.random.default_rng(seed))
    return atoms


def model_path(name: str) -> str:
    """A path, or a shipped model's name."""
    if os.path.exists(name):
        return name
    from symmd.models import SHIPPED_MODELS, shipped_model

    if name in SHIPPED_MODELS:
        return shipped_model(name)
    raise FileNotFoundError(
        f"model {name!r} is neither a file nor a shipped model ({sorted(SHIPPED_MODELS)}); "
        "pass --model PATH to a metatomic model with direct (non_conservative_force) outputs"
    )


def calculator(model: str, mode: str, monitor=None):
    """The SymmetryCalculator of a mode (not ``direct+mts``)."""
    from symmd import SymmetryCalculator

    kind, _, variant = mode.partition("+")
    symmetrize, degree = "none", 2
    if variant == "project":
        symmetrize = "project"
    elif variant.startswith("average"):
        rule, _, project = variant.partition("+")
        symmetrize = "average+project" if project else "average"
        degree = int(rule[len("average") :])
    return SymmetryCalculator(
        model,
        symmetrize=symmetrize,
        quadrature=degree,
        non_conservative=kind == "direct",
        monitor=monitor,
        seed=0,
    )


# -- one run -------------------------------------------------------------------------


class _Failed(Exception):
    pass


def _state_row(atoms, epot: float, check, forces, direct: bool, t_ps: float) -> dict:
    ekin = float(atoms.get_kinetic_energy())
    row, _ = check.observe(atoms, forces, direct)
    return {
        "time_ps": t_ps,
        "epot": float(epot),
        "ekin": ekin,
        "temperature": float(atoms.get_temperature()),
        "momentum": row["momentum"],
        "angular_momentum": row["angular_momentum"],
        "net_force": row["net_force"],
        "net_torque": row["net_torque"],
    }


def _failure(series_t: list, target: float, step: int):
    window = series_t[-FAILURE_WINDOW:]
    if len(window) == FAILURE_WINDOW and np.mean(window) > 2 * target:
        return {"step": step, "cause": "temperature doubled"}
    return None


def run_ase(task: dict) -> dict:
    """One MD run with a SymmetryCalculator (every mode but ``direct+mts``)."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.verlet import VelocityVerlet

    from symmd import Monitor
    from symmd.conservation import ConservationCheck

    system, ensemble, mode, seed, steps = (
        task[k] for k in ("system", "ensemble", "mode", "seed", "steps")
    )
    bath = ENSEMBLES[ensemble]
    target = NVE_TEMPERATURE if bath is None else bath
    atoms = initial_state(system, target, seed)
    events: list = []
    monitor = Monitor(
        every=50,
        action=lambda monitor, event: events.append(event),
        ensemble="nve" if bath is None else "langevin",
        timestep=TIMESTEP_FS,
    )
    calc = calculator(task["model"], mode, monitor)
    atoms.calc = calc
    direct = mode.startswith("direct")
    if bath is None:
        dyn = VelocityVerlet(atoms, TIMESTEP_FS * units.fs)
    else:
        dyn = Langevin(
            atoms,
            TIMESTEP_FS * units.fs,
            temperature_K=bath,
            friction=FRICTION_PER_FS / units.fs,
            fixcm=False,
            rng=np.random.default_rng(10_000 + seed),
        )
    check = ConservationCheck({}, "nve" if bath is None else "langevin")
    series: list[dict] = []
    temperatures: list[float] = []
    failed = None

    def observe():
        nonlocal failed
        step = dyn.nsteps
        forces = calc.results["forces"]
        finite = np.isfinite(atoms.positions).all() and np.isfinite(forces).all()
        if not finite:
            failed = {"step": step, "cause": "non-finite"}
            raise _Failed
        temperatures.append(float(atoms.get_temperature()))
        if step % task["stride"] == 0:
            epot = calc.results["energy"]
            series.append(_state_row(atoms, epot, check, forces, direct, step * TIMESTEP_FS / 1000))
        collapse = next((e for e in events if e["metric"] in ("min_distance", "non_finite")), None)
        if collapse is not None:
            cause = "collapse" if collapse["metric"] == "min_distance" else "non-finite"
            failed = {"step": collapse["step"], "cause": cause}
            raise _Failed
        failed = _failure(temperatures, target, step)
        if failed is not None:
            raise _Failed

    dyn.attach(observe, interval=1)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dyn.run(steps)
        except _Failed:
            pass
        except Exception as error:  # a model or integrator blow-up is a failure too
            failed = {"step": dyn.nsteps, "cause": f"{type(error).__name__}: {error}"[:200]}
    wall = time.perf_counter() - start
    first = {}
    for event in events:
        for name in event["flags"]:
            first.setdefault(name, event["step"])
    return _record(task, series, failed, first, wall, max(dyn.nsteps, 1), len(atoms))


def run_mts(task: dict) -> dict:
    """One i-PI MTS run (``direct+mts``); the conservation checks and the
    failure criteria are applied to its trajectory afterwards."""
    import ipi_mts

    from symmd.conservation import ConservationCheck

    system, ensemble, seed, steps = (task[k] for k in ("system", "ensemble", "seed", "steps"))
    bath = ENSEMBLES[ensemble]
    target = NVE_TEMPERATURE if bath is None else bath
    atoms = initial_state(system, target, seed)
    if system == "cluster":  # i-PI needs a box: vacuum beyond the cutoff (isolated)
        atoms.center(vacuum=10.0)
        atoms.pbc = True
    outer = max(1, steps // MTS_INNER)
    stride = max(1, task["stride"] // MTS_INNER)
    folder = pathlib.Path(tempfile.mkdtemp(prefix=f"symmd-mts-{system}-{ensemble}-{seed}-"))
    failed = None
    try:
        out = ipi_mts.run_mts(
            folder,
            atoms,
            task["mts_models"]["direct"],
            task["mts_models"]["conservative"],
            steps=outer,
            outer_fs=MTS_OUTER_FS,
            inner=MTS_INNER,
            temperature=target,
            friction_per_fs=None if bath is None else FRICTION_PER_FS,
            seed=seed,
            stride=stride,
            timeout=7 * 24 * 3600,
        )
    except RuntimeError as error:
        return _record(task, [], {"step": 0, "cause": str(error)[-300:]}, {}, 0.0, 1, len(atoms))
    shutil.rmtree(folder, ignore_errors=True)
    check = ConservationCheck({}, "nve" if bath is None else "langevin")
    masses = atoms.get_masses()
    if system == "cluster":
        atoms.pbc = False
    series, first = [], {}
    frame = atoms.copy()
    frame.set_masses(masses)
    n_frames = len(out["positions"])
    # the running mean over FAILURE_WINDOW fs, in frames of stride * MTS_OUTER_FS fs
    window = max(1, round(FAILURE_WINDOW * TIMESTEP_FS / (stride * MTS_OUTER_FS)))
    for i in range(n_frames):
        frame.positions = out["positions"][i]
        frame.set_momenta(out["momenta"][i])
        step = int(round(out["time_ps"][i] * 1000 / TIMESTEP_FS))
        row = _state_row(
            frame, out["potential"][i], check, np.zeros((len(frame), 3)), False, out["time_ps"][i]
        )
        # no forces in the trajectory: the net force and torque are not measured
        row["net_force"] = row["net_torque"] = None
        series.append(row)
        for name in ("momentum", "angular_momentum"):
            if row[name] is not None and row[name] > check.limit:
                first.setdefault(name, step)
        recent = [r["temperature"] for r in series[-window:]]
        if failed is None and len(recent) == window and np.mean(recent) > 2 * target:
            failed = {"step": step, "cause": "temperature doubled"}
        if not np.isfinite(out["conserved"][i]):
            failed = failed or {"step": step, "cause": "non-finite"}
    record = _record(task, series, failed, first, out["seconds"], outer * MTS_INNER, len(atoms))
    record["conserved_meV_per_atom"] = [
        1000 * (c - out["conserved"][0]) / len(atoms) for c in out["conserved"]
    ]
    return record


def _slope(t: np.ndarray, y: np.ndarray) -> float | None:
    return float(np.polyfit(t, y, 1)[0]) if len(t) >= 3 else None


def _record(task, series, failed, first, wall, steps_done, n_atoms) -> dict:
    """The JSON line of one run: settings, series, and its summary."""
    from ase import units

    t = np.array([r["time_ps"] for r in series])
    record = {k: task[k] for k in ("key", "system", "ensemble", "mode", "seed", "steps")}
    record.update(n_atoms=n_atoms, failed=failed, first_flags=first, series=series)
    record["first_flag"] = (
        None
        if not first
        else dict(zip(("metric", "step"), min(first.items(), key=lambda kv: kv[1])))
    )
    record["seconds_per_step"] = wall / steps_done
    if len(series) >= 3:
        etot = np.array([r["epot"] + r["ekin"] for r in series]) / n_atoms
        temperature = np.array([r["temperature"] for r in series])
        if task["ensemble"] == "nve":
            record["energy_drift_meV_per_atom_per_ps"] = 1000 * _slope(t, etot)
            record["temperature_drift_K_per_ps"] = _slope(t, temperature)
            # the work of the forces against the model's energy that would raise
            # the kinetic energy by 10%: a 10% temperature drift, at the least
            tenth = 0.1 * 1.5 * units.kB * NVE_TEMPERATURE
            over = np.nonzero(np.abs(etot - etot[0]) > tenth)[0]
            heated = float(t[over[0]]) if len(over) else None
            record["time_to_10pct_heat_ps"] = heated
            flag = record["first_flag"]
            record["flagged_before_10pct_heat"] = (
                None
                if flag is None
                else (heated is None or flag["step"] * TIMESTEP_FS / 1000 <= heated)
            )
        for name in ("momentum", "angular_momentum"):
            values = [r[name] for r in series if r[name] is not None]
            if values:
                record[f"{name}_final"], record[f"{name}_max"] = values[-1], max(values)
    return record


def run_task(task: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    return run_mts(task) if task["mode"] == "direct+mts" else run_ase(task)


# -- timing ----------------------------------------------------------------------------


def timing(model: str, systems, modes, repeats: int) -> dict:
    """Median seconds of one force evaluation per (system, mode), the modes
    interleaved so that the machine's load falls on all of them alike."""
    import torch

    torch.set_num_threads(1)
    out: dict = {}
    for system in systems:
        atoms = structure(system)
        calcs = {m: calculator(model, m) for m in modes if m != "direct+mts"}
        samples: dict = {m: [] for m in calcs}
        rng = np.random.default_rng(1)
        for i in range(repeats + 2):  # two warm-up rounds
            for mode, calc in calcs.items():
                moved = atoms.copy()
                moved.positions += rng.normal(scale=1e-3, size=moved.positions.shape)
                start = time.perf_counter()
                calc.get_forces(moved)
                if i >= 2:
                    samples[mode].append(time.perf_counter() - start)
        medians = {m: float(np.median(v)) for m, v in samples.items()}
        base = medians["conservative"]
        rows = {m: {"seconds": s, "vs_conservative": s / base} for m, s in medians.items()}
        if "direct+project" in medians:  # MTS: M direct steps and one conservative, per M steps
            mts = (MTS_INNER * medians["direct+project"] + base) / MTS_INNER
            rows["direct+mts"] = {"seconds": mts, "vs_conservative": mts / base, "estimated": True}
        out[system] = rows
    return out


# -- aggregation and figure ----------------------------------------------------------------


def aggregate(records: list, config: dict, cost: dict) -> dict:
    summary: dict = {}
    curves: dict = {}
    for r in records:
        cell = summary.setdefault(r["system"], {}).setdefault(r["ensemble"], {})
        cell.setdefault(r["mode"], []).append(r)
    for system, by_ensemble in summary.items():
        for ensemble, by_mode in by_ensemble.items():
            for mode, runs in by_mode.items():
                by_mode[mode] = _summarize(runs, cost.get(system, {}).get(mode))
                curves.setdefault(system, {}).setdefault(ensemble, {})[mode] = _mean_curve(runs)
    return {
        "config": config,
        "cost": cost,
        "summary": summary,
        "curves": curves,
        "runs": [{k: v for k, v in r.items() if k != "series"} for r in records],
    }


def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": float(np.mean(values)), "sd": float(np.std(values)), "n": len(values)}


def _summarize(runs: list, cost) -> dict:
    failures = [r["failed"] for r in runs if r["failed"]]
    flags = [r["first_flag"] for r in runs if r["first_flag"]]
    return {
        "seeds": len(runs),
        "failed": len(failures),
        "time_to_failure_ps": _stats([f["step"] * TIMESTEP_FS / 1000 for f in failures]),
        "failure_causes": sorted({f["cause"] for f in failures}),
        "energy_drift_meV_per_atom_per_ps": _stats(
            [r.get("energy_drift_meV_per_atom_per_ps") for r in runs]
        ),
        "temperature_drift_K_per_ps": _stats([r.get("temperature_drift_K_per_ps") for r in runs]),
        "momentum_max": _stats([r.get("momentum_max") for r in runs]),
        "angular_momentum_max": _stats([r.get("angular_momentum_max") for r in runs]),
        "time_to_10pct_heat_ps": _stats([r.get("time_to_10pct_heat_ps") for r in runs]),
        "flagged_before_10pct_heat": sum(bool(r.get("flagged_before_10pct_heat")) for r in runs),
        "flagged": len(flags),
        "first_flag_step": _stats([f["step"] for f in flags]),
        "first_flag_metrics": sorted({f["metric"] for f in flags}),
        "first_flag_step_per_metric": {
            name: _stats([r["first_flags"][name] for r in runs if name in r["first_flags"]])
            for name in sorted({n for r in runs for n in r["first_flags"]})
        },
        "cost_vs_conservative": None if cost is None else cost["vs_conservative"],
        "seconds_per_step": _stats([r["seconds_per_step"] for r in runs]),
    }


def _mean_curve(runs: list) -> dict:
    """Seed means on the common time grid (the shortest run's, failures cut short)."""
    usable = [r for r in runs if len(r["series"]) >= 2]
    if not usable:
        return {}
    n = min(len(r["series"]) for r in usable)
    out = {"time_ps": [row["time_ps"] for row in usable[0]["series"][:n]]}
    for name in ("energy", "temperature", "momentum", "angular_momentum"):
        columns = []
        for r in usable:
            s = r["series"][:n]
            if name == "energy":
                e0 = s[0]["epot"] + s[0]["ekin"]
                columns.append([1000 * (x["epot"] + x["ekin"] - e0) / r["n_atoms"] for x in s])
            elif s[0][name] is not None:
                columns.append([x[name] for x in s])
        if columns:
            out[name] = np.mean(np.array(columns, dtype=float), axis=0).tolist()
    return out


def figure(result: dict, path: pathlib.Path) -> None:
    """Drift curves per mode (seed means): NVE total energy and temperature,
    NVE momentum and angular momentum change, Langevin 900 K temperature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = [
        ("nve", "energy", "NVE: E - E(0) (meV/atom)", False),
        ("nve", "temperature", "NVE: T (K)", False),
        ("nve", "momentum", "NVE: |dP| (thermal units)", True),
        ("nve", "angular_momentum", "NVE: |dL| (thermal units)", True),
        ("langevin900", "temperature", "Langevin 900 K: T (K)", False),
    ]
    periodic = {"bulk": ("langevin300", "temperature", "Langevin 300 K: T (K)", False)}
    systems = list(result["curves"])
    fig, axes = plt.subplots(
        len(systems), len(panels), figsize=(3.2 * len(panels), 2.8 * len(systems)), squeeze=False
    )
    colours = dict(zip(MODES, plt.get_cmap("tab10").colors))
    for row, system in enumerate(systems):
        for col, panel in enumerate(panels):
            if panel[1] == "angular_momentum" and system in periodic:  # no L for a cell
                panel = periodic[system]
            ensemble, name, label, log = panel
            ax = axes[row][col]
            ax.xaxis.set_major_locator(MaxNLocator(4))
            for mode, curve in result["curves"][system].get(ensemble, {}).items():
                if name in curve:
                    y = np.abs(curve[name]) if log else curve[name]
                    ax.plot(curve["time_ps"], y, label=mode, color=colours.get(mode), lw=1.2)
            if log:
                ax.set_yscale("log")
            ax.set_title(f"{system}: {label}", fontsize=8)
            ax.set_xlabel("time (ps)", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(result: dict) -> str:
    """README tables: per system, NVE (drifts, momentum, angular momentum, first
    flag, cost) and the failures over all three ensembles."""
    summary = result["summary"]
    lines = [
        "| system | mode | E drift, NVE (meV/atom/ps) | T drift, NVE (K/ps) "
        "| max dP, NVE | max dL, NVE | first flag, NVE (step) | failed/runs: NVE, 300 K, 900 K "
        "| cost per step |",
        "|---|---|--:|--:|--:|--:|---|--:|--:|",
    ]
    for system, by_ensemble in summary.items():
        for mode, s in by_ensemble.get("nve", {}).items():

            def stat(value, spec, sd=True):
                if value is None:
                    return "-"
                text = f"{value['mean']:{spec}}"
                return text + (f" ± {value['sd']:{spec}}" if sd else "")

            flag = "none"
            if s["flagged"]:
                names = ", ".join(s["first_flag_metrics"])
                flag = f"{names} ({s['first_flag_step']['mean']:.0f})"
            failed = ", ".join(
                f"{by_ensemble[e][mode]['failed']}/{by_ensemble[e][mode]['seeds']}"
                if mode in by_ensemble.get(e, {})
                else "-"
                for e in ENSEMBLES
            )
            cost = s["cost_vs_conservative"]
            lines.append(
                f"| {system} | {mode} | {stat(s['energy_drift_meV_per_atom_per_ps'], '.3g')} "
                f"| {stat(s['temperature_drift_K_per_ps'], '.3g')} "
                f"| {stat(s['momentum_max'], '.2g', False)} "
                f"| {stat(s['angular_momentum_max'], '.2g', False)} | {flag} | {failed} "
                f"| {'-' if cost is None else f'{cost:.2f}x'} |"
            )
    return "\n".join(lines)


def print_table(result: dict) -> None:
    head = f"{'system':<8}{'ensemble':<12}{'mode':<17}{'E drift':>16}{'T drift':>10}{'max dP':>9}{'max dL':>9}{'failed':>8}{'1st flag':>22}{'cost':>7}"
    print(head)
    for system, by_ensemble in result["summary"].items():
        for ensemble, by_mode in by_ensemble.items():
            for mode, s in by_mode.items():

                def fmt(stat, spec, sd=False):
                    if stat is None:
                        return "-"
                    return f"{stat['mean']:{spec}}" + (f"±{stat['sd']:.2g}" if sd else "")

                flag = "-"
                if s["flagged"]:
                    flag = f"{','.join(s['first_flag_metrics'])[:12]}@{s['first_flag_step']['mean']:.0f}"
                cost = (
                    "-" if s["cost_vs_conservative"] is None else f"{s['cost_vs_conservative']:.2f}"
                )
                print(
                    f"{system:<8}{ensemble:<12}{mode:<17}"
                    f"{fmt(s['energy_drift_meV_per_atom_per_ps'], '.3g', True):>16}"
                    f"{fmt(s['temperature_drift_K_per_ps'], '.3g'):>10}"
                    f"{fmt(s['momentum_max'], '.2g'):>9}{fmt(s['angular_momentum_max'], '.2g'):>9}"
                    f"{s['failed']:>5}/{s['seeds']:<2}{flag:>22}{cost:>7}"
                )


# -- driver ----------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="direct-force model (.pt) or shipped name"
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (40 steps, 1 seed)")
    parser.add_argument("--steps", type=int, help="MD steps of 1 fs (default 5000; quick 40)")
    parser.add_argument(
        "--average-steps",
        type=int,
        help="MD steps of the averaged modes, which cost 24-48 evaluations a step "
        "(default: --steps)",
    )
    parser.add_argument(
        "--langevin-steps",
        type=int,
        help="MD steps of the Langevin runs of the other modes (default: --steps)",
    )
    parser.add_argument("--seeds", type=int, help="seeds per setting (default 4; quick 1)")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--ensembles", nargs="+", choices=list(ENSEMBLES), default=list(ENSEMBLES))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--stride", type=int, help="steps between recorded frames (default 50; quick 4)"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs in parallel processes (default 1)"
    )
    parser.add_argument("--repeats", type=int, help="timing repeats per mode (default 10; quick 2)")
    parser.add_argument(
        "--out", default=str(pathlib.Path(__file__).parent / "results"), help="output folder"
    )
    parser.add_argument("--estimate", action="store_true", help="print the cost estimate and stop")
    parser.add_argument(
        "--markdown", type=pathlib.Path, help="print the README tables of this JSON and stop"
    )
    parser.add_argument(
        "--aggregate-only",
        action="store_true",
        help="run nothing: write the JSON and figure of the runs already finished "
        "(the summary counts the seeds each setting has)",
    )
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return 0
    quick = args.quick
    steps = args.steps or (40 if quick else 5000)
    seeds = args.seeds or (1 if quick else 4)
    stride = args.stride or (4 if quick else 50)
    repeats = args.repeats or (2 if quick else 10)
    model = model_path(args.model)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "stability_quick" if quick else "stability"
    runs_path = out / f"{name}_runs.jsonl"

    cost_path = out / f"{name}_cost.json"
    if args.aggregate_only and cost_path.exists():
        cost = json.loads(cost_path.read_text())
    else:
        print(
            f"timing one force evaluation per mode ({repeats} interleaved repeats) ...", flush=True
        )
        cost = timing(model, args.systems, [*args.modes, *COST_ONLY], repeats)
        cost_path.write_text(json.dumps(cost, indent=1))
    for system, rows in cost.items():
        print(
            f"  {system}: "
            + ", ".join(
                f"{m} {r['seconds'] * 1000:.1f} ms ({r['vs_conservative']:.2f}x)"
                for m, r in rows.items()
            )
        )

    import hashlib

    digest = hashlib.sha256(pathlib.Path(model).read_bytes()).hexdigest()[:10]
    tasks = []
    for system in args.systems:
        for ensemble in args.ensembles:
            for mode in args.modes:
                length = steps
                if "average" in mode and args.average_steps:
                    length = args.average_steps
                elif ensemble != "nve" and args.langevin_steps:
                    length = args.langevin_steps
                for seed in range(seeds):
                    key = f"{pathlib.Path(model).name}:{digest}/{system}/{ensemble}/{mode}/seed{seed}/steps{length}/stride{stride}"
                    tasks.append(
                        dict(
                            key=key,
                            system=system,
                            ensemble=ensemble,
                            mode=mode,
                            seed=seed,
                            steps=length,
                            stride=stride,
                            model=model,
                        )
                    )
    done = {}
    if runs_path.exists():
        for line in runs_path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                done[record["key"]] = record
    # NVE first (drift, momentum), then the thermostatted runs: an interrupted
    # run keeps the measurements the table needs most
    todo = sorted((t for t in tasks if t["key"] not in done), key=lambda t: t["ensemble"] != "nve")
    if args.aggregate_only:
        missing = len(todo)
        tasks, todo = [t for t in tasks if t["key"] in done], []
        print(f"aggregating the {len(tasks)} finished runs ({missing} not run)", flush=True)
    total = sum(cost[t["system"]][t["mode"]]["seconds"] * t["steps"] for t in todo)
    print(
        f"{len(tasks)} runs, {len(tasks) - len(todo)} already in {runs_path}; the remaining "
        f"{len(todo)} cost about {total / 3600:.2f} CPU hours of force evaluations "
        f"({total / 3600 / max(1, args.jobs):.2f} h on {args.jobs} jobs, plus MD and i-PI overhead)",
        flush=True,
    )
    if args.estimate:
        return 0
    if any(t["mode"] == "direct+mts" for t in todo):
        import symmd

        folder = out / f"{name}_models"
        folder.mkdir(exist_ok=True)
        mts_models = {
            "direct": str(folder / "direct-project.pt"),
            "conservative": str(folder / "conservative.pt"),
        }
        symmd.export(model, mts_models["direct"], symmetrize="project")
        symmd.export(model, mts_models["conservative"], symmetrize="none")
        for t in todo:
            t["mts_models"] = mts_models
    os.environ["OMP_NUM_THREADS"] = "1"
    start = time.perf_counter()
    with open(runs_path, "a") as handle:

        def save(record):
            done[record["key"]] = record
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            status = (
                "ok"
                if not record["failed"]
                else f"failed at step {record['failed']['step']} ({record['failed']['cause']})"
            )
            print(
                f"[{len(done)}/{len(tasks)} {time.perf_counter() - start:.0f} s] {record['key']}: {status}",
                flush=True,
            )

        if args.jobs > 1 and len(todo) > 1:
            import multiprocessing

            with multiprocessing.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
                for record in pool.imap_unordered(run_task, todo):
                    save(record)
        else:
            for task in todo:
                save(run_task(task))
    records = [done[t["key"]] for t in tasks]
    config = {
        "model": pathlib.Path(model).name,
        "model_sha256": digest,
        "steps": steps,
        "average_steps": args.average_steps or steps,
        "langevin_steps": args.langevin_steps or steps,
        "seeds": seeds,
        "stride": stride,
        "timestep_fs": TIMESTEP_FS,
        "friction_per_fs": FRICTION_PER_FS,
        "nve_temperature_K": NVE_TEMPERATURE,
        "mts": {"inner": MTS_INNER, "outer_fs": MTS_OUTER_FS},
        "systems": {
            s: {"n_atoms": len(structure(s)), "formula": structure(s).get_chemical_formula()}
            for s in args.systems
        },
        "ensembles": args.ensembles,
        "modes": args.modes,
        "quick": quick,
        "threads": 1,
    }
    result = aggregate(records, config, cost)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    print_table(result)
    try:
        figure(result, out / f"{name}.png")
    except ImportError:
        print("matplotlib is missing: no figure (pip install 'symmd[plot]')")
    print(f"wrote {out / f'{name}.json'} and {out / f'{name}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
