"""How much lower can fine-tuning make the equivariance error within an accuracy budget?

Two tiny PETs, each fine-tuned with L = L_mu + gamma L_sigma (``symmd.finetune``,
``augment=True``) in each trainable mode (``readout``, ``lora``, ``all``), with
the accuracy budget ``max_mae_increase`` selecting the gamma of the scan:

- ``plates``: ``examples/data/pet-noaug-plate.ckpt``, trained WITHOUT rotational
  augmentation on flat Cu/Al plates (all in the lab xy plane); fine-tuned on 300
  fresh plates; budget +25 % force MAE (goal: A_F 3x lower);
- ``cual``: ``examples/data/pet-emt-cual.ckpt``, the shipped periodic Cu/Al model
  (``symmd/data/pet-emt-cual.pt``), trained WITH augmentation; fine-tuned on
  its own training set (``generate_data.py``, seed 0); budget +10 % force MAE
  (goal: A_F 5x lower).

The scan (every gamma) is measured on a validation set (degree-5 rule); the
selected model of each mode, and the un-fine-tuned one, then on a held-out
test set (degree-7 rule: energy/force MAE, A_E, A_F) and in MD (Langevin
300 K, median A_F/F of symmd's Monitor). Training time is the wall time of
the selected run's optimisation on this machine (2 shared cores: compare
modes, not absolute values).

    python benchmarks/finetune_tradeoff.py                   # hours on 2 busy cores
    python benchmarks/finetune_tradeoff.py --models plates   # one model
    python benchmarks/finetune_tradeoff.py --quick           # smoke test (minutes)

Writes ``benchmarks/results/finetune_tradeoff.json`` (after every mode, so an
interrupted run keeps what it measured) and ``docs/figures/finetune_tradeoff.png``.
"""

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np
from ase import units
from ase.md.langevin import Langevin

import symmd
from symmd import Monitor, SymmetryCalculator
from symmd.models import cual_cell

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples" / "train_model"))
sys.path.insert(0, str(ROOT / "examples"))
from _common import thermalize  # noqa: E402
from generate_data import make_periodic, make_plate  # noqa: E402 (EMT data, seeded)

MODES = ("readout", "lora", "all")
MODELS = {
    "plates": {
        "checkpoint": ROOT / "examples/data/pet-noaug-plate.ckpt",
        "augmented": False,
        "budget": 0.25,
        "goal": 3.0,
        "gammas": [30.0, 100.0, 300.0],
        "n_train": 300,
        "n_valid": 30,
        "n_test": 30,
        "epochs": 10,
        "modes": {  # trainable mode -> its optimiser settings
            "readout": {"lr": 3e-3},
            "lora": {"lr": 3e-3, "rank": 8},
            "all": {"lr": 1e-3},
        },
    },
    "cual": {
        "checkpoint": ROOT / "examples/data/pet-emt-cual.ckpt",
        "augmented": True,
        "budget": 0.10,
        "goal": 5.0,
        "gammas": [30.0, 100.0, 300.0],
        "n_train": 150,
        "n_valid": 20,
        "n_test": 20,
        "epochs": 8,
        "modes": {  # smaller steps: this model is already near its optimum
            "readout": {"lr": 1e-3},
            "lora": {"lr": 1e-3, "rank": 8},
            "all": {"lr": 3e-4},
        },
    },
}


def data(name: str, n_train: int, n_valid: int, n_test: int):
    """(train, valid, test) lists of labelled structures, seeded."""
    if name == "plates":
        sets = [[make_plate(np.random.default_rng([k, i])) for i in range(n)] for k, n in
                ((1, n_train), (2, n_valid), (3, n_test))]  # fmt: skip
        return sets
    train_rng, test_rng = np.random.default_rng(0), np.random.default_rng(12345)
    train = [make_periodic(train_rng) for _ in range(n_train)]  # = train_periodic.xyz[:n]
    valid = [make_periodic(np.random.default_rng([2, i])) for i in range(n_valid)]
    test = [make_periodic(test_rng) for _ in range(n_test)]  # = test_periodic.xyz[:n]
    return train, valid, test


def md_structure(name: str, valid):
    return max(valid, key=len).copy() if name == "plates" else cual_cell(rattle=0.05)


def md_rel_force_error(model, atoms, steps: int) -> float:
    """Median A_F / F of symmd's Monitor over a Langevin run (300 K, 1 fs)."""
    atoms = atoms.copy()
    rng = np.random.default_rng(0)
    monitor = Monitor(every=5, rotations=4, seed=0, action="warn", timestep=1.0)
    atoms.calc = SymmetryCalculator(model, monitor=monitor)
    thermalize(atoms, 300, rng)
    dyn = Langevin(
        atoms, 1 * units.fs, temperature_K=300, friction=0.02 / units.fs, fixcm=False, rng=rng
    )
    dyn.run(steps)
    return float(np.median([row["rel_forces"] for row in monitor.history]))


def measured(model, test, degree: int) -> dict:
    """Held-out MAE and A of ``model`` (a .ckpt path) on ``test``."""
    result = symmd.finetune(model, test, gamma=0.0, epochs=0, degree=degree, progress=False)
    m = result.metrics["metrics"]
    return {
        "energy_mae": m["energy"]["mae"],
        "forces_mae": m["forces"]["mae"],
        "energy_A_per_atom_rms": m["energy"]["A_per_atom_rms"],
        "forces_A_rms": m["forces"]["A_rms"],
        "n_structures": len(test),
        "degree": degree,
    }


def run_model(name: str, spec: dict, args, scratch: pathlib.Path, report: dict) -> dict:
    train, valid, test = data(
        name,
        args.n_train or spec["n_train"],
        args.n_valid or spec["n_valid"],
        args.n_test or spec["n_test"],
    )
    checkpoint = str(spec["checkpoint"])
    atoms = md_structure(name, valid)
    entry = report["models"].setdefault(name, {})
    entry.update(
        checkpoint=str(spec["checkpoint"].relative_to(ROOT)),
        augmented=spec["augmented"],
        budget=spec["budget"],
        goal_A_reduction=spec["goal"],
        n_train=len(train),
        n_valid=len(valid),
        n_test=len(test),
        epochs=args.epochs or spec["epochs"],
        gammas=args.gamma or spec["gammas"],
    )
    entry["raw"] = measured(checkpoint, test, args.degree)
    entry["raw"]["md_rel_forces"] = md_rel_force_error(checkpoint, atoms, args.steps)
    modes = entry.setdefault("modes", {})
    for mode in args.modes:
        start = time.perf_counter()
        chosen = symmd.finetune(
            checkpoint,
            train,
            valid=valid,
            gamma=entry["gammas"],
            trainable=mode,
            epochs=entry["epochs"],
            batch_size=8,
            rotations=2,
            augment=True,
            seed=0,
            degree=args.scan_degree,
            max_mae_increase=spec["budget"],
            out=scratch / name / mode,
            progress=False,
            **spec["modes"][mode],
        )
        scan = chosen.scan
        selected = [row for row in scan["rows"] if row["selected"]][0]
        tuned = str(chosen.paths["checkpoint"])
        row = {
            "selected": scan["selected"],
            "gamma": None if scan["selected"] == "raw" else selected["gamma"],
            "settings": {k: v for k, v in chosen.metrics.items() if k in (
                "lr", "epochs", "rotations", "augment", "batch_size", "lora", "n_trained")},
            "train_seconds": None if scan["selected"] == "raw" else selected["train_seconds"],
            "scan_train_seconds": sum(r["train_seconds"] for r in scan["rows"]),
            "test": measured(tuned, test, args.degree),
            "scan": scan,
            "wall_seconds": time.perf_counter() - start,
        }  # fmt: skip
        row["settings"]["lora"] = row["settings"]["lora"] and {
            k: row["settings"]["lora"][k] for k in ("rank", "alpha")
        }
        row["test"]["md_rel_forces"] = md_rel_force_error(
            str(chosen.paths["model"]), atoms, args.steps
        )
        modes[mode] = row
        print(f"{name} {mode}: selected {scan['selected']} ({row['wall_seconds']:.0f} s)")
        write(report, args.json, name)
    return entry


def write(report: dict, path: pathlib.Path, name: str) -> dict:
    """Write ``report`` with its entry for model ``name`` merged into the
    JSON already at ``path`` (so that runs of single models add up)."""
    merged = dict(report)
    if path.exists():
        merged = json.loads(path.read_text())
        merged.update({k: v for k, v in report.items() if k != "models"})
        merged.setdefault("models", {})
    merged["models"][name] = report["models"][name]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=1))
    return merged


def table(report: dict) -> str:
    lines = [
        "model   mode     gamma   E MAE  F MAE  (+%)    A_E     A_F  A_F lower  MD A_F/F  train s",
    ]
    for name, entry in report["models"].items():
        raw = entry["raw"]
        rows = [("raw", None, raw, None)]
        rows += [(m, r["gamma"], r["test"], r["train_seconds"]) for m, r in entry["modes"].items()]
        for mode, gamma, t, seconds in rows:
            increase = 100 * (t["forces_mae"] / raw["forces_mae"] - 1)
            lines.append(
                f"{name:7s} {mode:7s} {'-' if gamma is None else f'{gamma:g}':>6s}"
                f"  {1e3 * t['energy_mae']:6.2f} {1e3 * t['forces_mae']:6.1f} {increase:+5.0f}"
                f"  {1e3 * t['energy_A_per_atom_rms']:6.3f} {1e3 * t['forces_A_rms']:7.2f}"
                f"  {raw['forces_A_rms'] / t['forces_A_rms']:8.2f}x  {t['md_rel_forces']:.2e}"
                f"  {'-' if seconds is None else f'{seconds:.0f}':>7s}"
            )
    return "\n".join(lines)


#: README names of the models
LABELS = {"plates": "plates (no augmentation)", "cual": "Cu/Al (augmented)"}


def markdown(report: dict) -> str:
    """The README table (tests/test_readme_figures.py reads it back)."""
    lines = [
        "| model | trained | gamma | E MAE (meV/atom) | F MAE (meV/A) | F MAE change "
        "| A_E (meV/atom) | A_F (meV/A) | A_F lower | MD A_F/F | training (s) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, entry in report["models"].items():
        raw = entry["raw"]
        rows = [("not fine-tuned", None, raw, None)]
        rows += [(m, r["gamma"], r["test"], r["train_seconds"]) for m, r in entry["modes"].items()]
        for mode, gamma, t, seconds in rows:
            change = "-"
            if mode != "not fine-tuned":
                change = f"{100 * (t['forces_mae'] / raw['forces_mae'] - 1):+.0f} %"
            lines.append(
                f"| {LABELS.get(name, name)} | {mode} | {'-' if gamma is None else f'{gamma:g}'} "
                f"| {1e3 * t['energy_mae']:.2f} | {1e3 * t['forces_mae']:.1f} | {change} "
                f"| {1e3 * t['energy_A_per_atom_rms']:.3f} | {1e3 * t['forces_A_rms']:.2f} "
                f"| {raw['forces_A_rms'] / t['forces_A_rms']:.2f}x | {t['md_rel_forces']:.3g} "
                f"| {'-' if seconds is None else f'{seconds:.0f}'} |"
            )
    return "\n".join(lines)


def figure(report: dict, path: pathlib.Path) -> None:
    """Fig. 5 style: validation force MAE vs A_F over the gamma scan, one line
    per mode, the budget as a dashed line, the selected runs circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    names = list(report["models"])
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.2), squeeze=False)
    colors = {"readout": "tab:blue", "lora": "tab:orange", "all": "tab:green"}
    for ax, name in zip(axes[0], names):
        entry = report["models"][name]
        reference = None
        for mode, row in entry["modes"].items():
            scan = row["scan"]
            reference = scan["rows"][0]
            tuned = scan["rows"][1:]
            x = [1e3 * r["forces_mae"] for r in tuned]
            y = [1e3 * r["forces_A_rms"] for r in tuned]
            ax.plot(x, y, "o-", color=colors.get(mode, "k"), label=mode, ms=5)
            for r, xi, yi in zip(tuned, x, y):
                ax.annotate(f"{r['gamma']:g}", (xi, yi), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
                if r["selected"]:
                    ax.plot(xi, yi, "o", ms=12, mfc="none", color=colors.get(mode, "k"))
        if reference is not None:
            x0, y0 = 1e3 * reference["forces_mae"], 1e3 * reference["forces_A_rms"]
            ax.plot(x0, y0, "k*", ms=12, label="not fine-tuned")
            ax.axvline(x0 * (1 + entry["budget"]), color="0.5", ls="--", lw=1,
                       label=f"budget +{100 * entry['budget']:.0f} %")  # fmt: skip
            ax.axhline(y0 / entry["goal_A_reduction"], color="0.5", ls=":", lw=1,
                       label=f"goal: A_F / {entry['goal_A_reduction']:g}")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers, 1-2-5 per decade
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FormatStrFormatter("%g"))
            axis.set_minor_formatter(NullFormatter())
        kind = "with" if entry["augmented"] else "without"
        ax.set_title(f"{name}: PET trained {kind} augmentation", fontsize=10)
        ax.set_xlabel("validation force MAE (meV/A)")
        ax.set_ylabel("validation force equivariance error A_F (meV/A)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--gamma", type=float, nargs="+", help="override the gamma scan")
    parser.add_argument("--epochs", type=int, help="override the epochs")
    parser.add_argument("--n-train", type=int, help="override the training set size")
    parser.add_argument("--n-valid", type=int, help="override the validation set size")
    parser.add_argument("--n-test", type=int, help="override the test set size")
    parser.add_argument("--scan-degree", type=int, default=5, help="degree of the scan's A")
    parser.add_argument("--degree", type=int, default=7, help="degree of the held-out A")
    parser.add_argument("--steps", type=int, default=100, help="MD steps")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny everything")
    parser.add_argument(
        "--json", type=pathlib.Path, default=ROOT / "benchmarks/results/finetune_tradeoff.json"
    )
    parser.add_argument(
        "--figure", type=pathlib.Path, default=ROOT / "docs/figures/finetune_tradeoff.png"
    )
    parser.add_argument("--scratch", type=pathlib.Path, help="keep the tuned models here")
    parser.add_argument(
        "--markdown", type=pathlib.Path, help="print the README table of this JSON and stop"
    )
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    if args.quick:
        args.gamma, args.epochs, args.n_train = args.gamma or [10.0], 1, 8
        args.n_valid, args.n_test, args.scan_degree, args.degree, args.steps = 3, 3, 2, 2, 10
    scratch = args.scratch or pathlib.Path(tempfile.mkdtemp(prefix="finetune_tradeoff_"))
    report = {
        "command": "python benchmarks/finetune_tradeoff.py",
        "augment": True,
        "units": "eV, eV/A; energy per atom",
        "models": {},
    }
    start = time.perf_counter()
    for name in args.models:
        began = time.perf_counter()
        run_model(name, MODELS[name], args, scratch, report)
        report["models"][name]["wall_seconds"] = time.perf_counter() - began
        merged = write(report, args.json, name)
    figure(merged, args.figure)
    print(table(merged))
    print(
        f"wrote {args.json}, {args.figure} ({time.perf_counter() - start:.0f} s); models in {scratch}"
    )


if __name__ == "__main__":
    main()
