"""The ``symmd`` command: ``md``, ``diagnose``, ``training``, ``export`` and ``plot``.

Errors in the arguments or the inputs end with one line on stderr and exit
status 2; a run stopped by the monitor exits with status 3 and its reason.
"""

from __future__ import annotations

import argparse
import csv
import sys
import warnings
from collections.abc import Sequence
from typing import Optional

__all__ = ["main"]


def default_structure():
    """The built-in structure: a 32-atom fcc Cu/Al cell (30% Al, seeded)."""
    import ase.build
    import numpy as np

    atoms = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 2, 2)
    rng = np.random.default_rng(0)
    atoms.numbers[rng.random(len(atoms)) < 0.3] = 13
    return atoms


def _read(path: Optional[str], index=-1):
    if path is None:
        return default_structure()
    import ase.io

    return ase.io.read(path, index=index)


def _model(name: Optional[str]) -> str:
    from .models import SHIPPED_MODELS, shipped_model

    if name is None:
        return shipped_model()
    return shipped_model(name) if name in SHIPPED_MODELS else name


def _md(args) -> int:
    import numpy as np
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet
    from tqdm import tqdm

    from . import InstabilityError, Monitor, SymmetryCalculator

    atoms = _read(args.structure)
    rng = np.random.default_rng(args.seed)
    monitor = None
    if args.monitor_every > 0:
        monitor = Monitor(
            every=args.monitor_every,
            action=args.action,
            log=args.log,
            seed=args.seed,
            ensemble=args.ensemble,
            timestep=args.timestep,
        )
    calc = SymmetryCalculator(
        _model(args.model),
        symmetrize=args.symmetrize,
        quadrature=args.degree,
        tolerance=args.tolerance,
        monitor=monitor,
        device=args.device,
        seed=args.seed,
    )
    atoms.calc = calc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=rng)
    dt = args.timestep * units.fs
    if args.ensemble == "nve":
        dyn = VelocityVerlet(atoms, dt)
    else:
        dyn = Langevin(atoms, dt, temperature_K=args.temperature, friction=args.friction, rng=rng)
    if args.trajectory:
        import ase.io

        def write_frame():
            ase.io.write(args.trajectory, atoms, format="extxyz", append=True)

        open(args.trajectory, "w").close()
        dyn.attach(write_frame, interval=args.trajectory_every)
    bar = tqdm(total=args.steps, desc="symmd md", unit="step", disable=args.quiet)

    def update():
        if dyn.nsteps == 0:  # observers also run once before the first step
            return
        post = {"T": f"{atoms.get_temperature():.0f}K", "mode": calc.mode}
        if monitor is not None and monitor.history:
            post["A_F/F"] = f"{monitor.history[-1].get('rel_forces', float('nan')):.2e}"
        bar.set_postfix(post, refresh=False)
        bar.update(1)

    dyn.attach(update, interval=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            dyn.run(args.steps)
    except InstabilityError as error:
        bar.close()
        where = f"; log: {args.log}" if args.log else ""
        print(f"symmd md: stopped: {error}{where}", file=sys.stderr)
        return 3
    bar.close()
    if calc.recommendation is not None:
        print(f"symmd md: --degree auto chose {calc.recommendation}")
    print(
        f"symmd md: {args.steps} steps done, mode {calc.mode}, "
        f"{len(monitor.events) if monitor else 0} flags"
        + (f"; log: {args.log}" if args.log and monitor else "")
    )
    return 0


def _diagnose(args) -> int:
    from .diagnose import diagnose

    frames = []
    for path in args.structures or [None]:
        read = _read(path, index=":") if path else [default_structure()]
        frames.extend(read)
    result = diagnose(
        _model(args.model),
        frames,
        max_lambda=args.max_lambda,
        quadrature=args.degree,
        properties=args.properties,
        layers=args.layers,
        batch_size=args.batch_size,
    )
    print(result.table())
    if args.json:
        result.to_json(args.json)
        print(f"wrote {args.json}")
    if args.plot:
        result.plot(args.plot)
        print(f"wrote {args.plot}")
    return 0


def _training(args) -> int:
    import ase.io

    from .training import diagnose_training, plot_training, save_json

    frames = ase.io.read(args.structures, index=args.index)
    frames = frames if isinstance(frames, list) else [frames]
    runs = {}
    for spec in args.runs:
        label, _, folder = spec.rpartition("=")
        label = label or folder.rstrip("/").split("/")[-1]
        runs[label] = diagnose_training(
            folder,
            frames,
            max_lambda=args.max_lambda,
            quadrature=args.degree,
            properties=args.properties,
            layers=args.layers,
            batch_size=args.batch_size,
        )
        print(f"== {label}: {len(runs[label].epochs)} checkpoints, {len(frames)} structures")
        print(runs[label].table())
    if args.json:
        save_json(runs, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        plot_training(runs, args.plot, names=args.names)
        print(f"wrote {args.plot}")
    return 0


def _degree(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an integer degree or 'auto', got {text!r}"
        ) from None


def plot_log(log: str, figure: str) -> None:
    """Figure of a monitor log: equivariance error, temperature and energy
    against time (or step), with mode switches and flags marked."""
    from ._plotting import pyplot

    with open(log) as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"the log {log!r} has no rows")

    def col(name, subset):
        return [float(r[name]) if r.get(name) not in (None, "") else float("nan") for r in subset]

    data = [r for r in rows if r.get("rel_forces")]
    use_time = data and all(r.get("time_fs") not in ("", "nan") for r in data)
    xname, xlabel = ("time_fs", "time (fs)") if use_time else ("step", "step")
    plt = pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(6, 6.5), sharex=True)
    axes[0].plot(col(xname, data), col("rel_forces", data), "o-", ms=3)
    axes[0].set_ylabel("A_F / F_rms")
    axes[0].set_yscale("log")
    axes[1].plot(col(xname, data), col("temperature", data), "-", color="C1")
    axes[1].set_ylabel("T (K)")
    axes[2].plot(col(xname, data), col("etot", data), "-", color="C2", label="E_tot")
    axes[2].plot(col(xname, data), col("epot", data), "-", color="C3", label="E_pot")
    axes[2].set_ylabel("energy (eV)")
    axes[2].legend(fontsize=7)
    axes[2].set_xlabel(xlabel)
    for r in rows:
        if r.get("flags"):
            x = float(r[xname]) if r.get(xname) not in ("", "nan", None) else float(r["step"])
            color = "C2" if r["flags"].startswith("switch") else "C3"
            for ax in axes:
                ax.axvline(x, color=color, alpha=0.4, lw=1)
    fig.tight_layout()
    fig.savefig(figure, dpi=120)
    plt.close(fig)


def _plot(args) -> int:
    plot_log(args.log, args.output)
    print(f"wrote {args.output}")
    return 0


def _export(args) -> int:
    from .export import export

    structure = _read(args.structure) if args.degree == "auto" else None
    exported = export(
        _model(args.model),
        args.output,
        symmetrize=args.symmetrize,
        quadrature=args.degree,
        reorient=args.reorient,
        monitor_every=args.monitor_every or None,
        rotations=args.rotations,
        batch_size=args.batch_size,
        uncertainty=args.uncertainty,
        structure=structure,
        tolerance=args.tolerance,
        seed=args.seed,
    )
    print(f"wrote {args.output}: outputs {sorted(exported.capabilities().outputs)}")
    return 0


def _spectrum_options(parser: argparse.ArgumentParser) -> None:
    """The options that ``diagnose`` and ``training`` pass to symmd.diagnose."""
    parser.add_argument(
        "--max-lambda", type=int, default=4, help="highest order of the spectrum (default 4)"
    )
    parser.add_argument("--degree", type=int, help="quadrature degree (default 2 x max-lambda)")
    parser.add_argument(
        "--properties", nargs="+", help="outputs to diagnose (default: all the model has)"
    )
    parser.add_argument(
        "--layers", nargs="+", help="submodules of an eager model (.ckpt) to diagnose too"
    )
    parser.add_argument("--batch-size", type=int, help="rotated copies per model call")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symmd",
        description="Measure and restore the rotational symmetry of ML potentials in MD.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    md = sub.add_parser(
        "md",
        help="run monitored MD",
        description="Run MD with a (symmetrized) model; the monitor stops an unstable run.",
    )
    md.add_argument(
        "structure",
        nargs="?",
        help="structure file read by ASE (default: a built-in 32-atom Cu/Al cell)",
    )
    md.add_argument(
        "--model", help="metatomic .pt file or a shipped model name (default: pet-emt-cual)"
    )
    md.add_argument("--steps", type=int, default=200, help="number of MD steps (default 200)")
    md.add_argument("--timestep", type=float, default=2.0, help="time step in fs (default 2)")
    md.add_argument(
        "--temperature", type=float, default=300.0, help="temperature in K (default 300)"
    )
    md.add_argument(
        "--ensemble", choices=["nve", "langevin"], default="langevin", help="default langevin"
    )
    md.add_argument(
        "--friction", type=float, default=0.02, help="Langevin friction in 1/fs (default 0.02)"
    )
    md.add_argument(
        "--symmetrize", choices=["none", "project", "average", "adaptive"], default="none"
    )
    md.add_argument(
        "--degree",
        type=_degree,
        default=3,
        help="quadrature degree for averaging, or 'auto' (smallest rule within --tolerance; default 3)",
    )
    md.add_argument(
        "--tolerance",
        type=float,
        default=1e-3,
        help="with --degree auto: largest RMS force residual of the average, eV/A (default 1e-3)",
    )
    md.add_argument(
        "--monitor-every",
        type=int,
        default=10,
        help="check every N steps; 0 turns the monitor off (default 10)",
    )
    md.add_argument(
        "--action",
        choices=["warn", "raise", "symmetrize"],
        default="raise",
        help="reaction to a flagged step (default raise)",
    )
    md.add_argument(
        "--log", default="symmd-md.csv", help="CSV log of the monitor (default symmd-md.csv)"
    )
    md.add_argument("--trajectory", help="extxyz trajectory to write")
    md.add_argument(
        "--trajectory-every", type=int, default=10, help="write every N steps (default 10)"
    )
    md.add_argument("--device", help="torch device (default: the model's preferred)")
    md.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    md.add_argument("--quiet", action="store_true", help="no progress bar")
    md.set_defaults(run=_md)

    diag = sub.add_parser(
        "diagnose",
        help="equivariance error and character spectrum",
        description="Equivariance error and character spectrum of every output.",
    )
    diag.add_argument(
        "structures",
        nargs="*",
        help="structure files (all frames are used; default: the built-in cell)",
    )
    diag.add_argument(
        "--model", help="metatomic .pt file or a shipped model name (default: pet-emt-cual)"
    )
    _spectrum_options(diag)
    diag.add_argument("--json", help="write the result as JSON")
    diag.add_argument("--plot", help="write the spectra as a figure")
    diag.set_defaults(run=_diagnose)

    train = sub.add_parser(
        "training",
        help="spectra along a training run (heatmaps lambda x epoch)",
        description="Character spectra of every output and layer along checkpoint series; "
        "one heatmap row per run, and their log ratio for two runs.",
    )
    train.add_argument(
        "runs",
        nargs="+",
        metavar="[LABEL=]FOLDER",
        help="folder of checkpoints (*.ckpt, else *.pt) named with their epoch, e.g. epoch_012.ckpt",
    )
    train.add_argument("--structures", required=True, help="structure file read by ASE")
    train.add_argument(
        "--index", default=":", help="ASE index of the frames to use (default ':', all)"
    )
    _spectrum_options(train)
    train.add_argument(
        "--names", nargs="+", help="outputs/layers shown in the figure (default: all)"
    )
    train.add_argument("--json", help="write every spectrum as JSON")
    train.add_argument("--plot", help="write the heatmaps as a figure")
    train.set_defaults(run=_training)

    exp = sub.add_parser(
        "export",
        help="write a symmetrized metatomic model for i-PI, LAMMPS, torch-sim, ASE",
        description="Export a metatomic model that averages MODEL over an exact O(3) rule "
        "inside any metatomic engine, optionally monitoring its equivariance error.",
    )
    exp.add_argument("model", help="metatomic .pt file, metatrain .ckpt or a shipped model name")
    exp.add_argument("-o", "--output", required=True, help="the exported .pt file")
    exp.add_argument("--symmetrize", choices=["average", "none", "project"], default="average")
    exp.add_argument(
        "--degree",
        type=_degree,
        default=3,
        help="quadrature degree, or 'auto' (chosen on --structure within --tolerance; default 3)",
    )
    exp.add_argument("--structure", help="with --degree auto: a typical structure (ASE file)")
    exp.add_argument(
        "--tolerance", type=float, default=1e-3, help="with --degree auto: eV/A (default 1e-3)"
    )
    exp.add_argument("--reorient", action="store_true", help="random orientation at every call")
    exp.add_argument(
        "--monitor-every", type=int, default=0, help="estimate A every N calls (default 0: off)"
    )
    exp.add_argument("--rotations", type=int, default=2, help="Haar draws per check (default 2)")
    exp.add_argument("--uncertainty", action="store_true", help="publish A/N as energy_uncertainty")
    exp.add_argument("--batch-size", type=int, help="rotated copies per model call")
    exp.add_argument("--seed", type=int, help="seed of the draws (default: random, stored)")
    exp.set_defaults(run=_export)

    plot = sub.add_parser(
        "plot",
        help="plot a monitor log",
        description="Plot the equivariance error, temperature and energy of a monitor log.",
    )
    plot.add_argument("log", help="CSV log written by symmd md / Monitor")
    plot.add_argument("-o", "--output", required=True, help="figure file (png, pdf, ...)")
    plot.set_defaults(run=_plot)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    for name in ("steps", "monitor_every", "trajectory_every"):
        value = getattr(args, name, None)
        if value is not None and value < 0:
            print(
                f"symmd {args.command}: error: --{name.replace('_', '-')} must be >= 0, got {value}",
                file=sys.stderr,
            )
            return 2
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError, OSError) as error:
        print(f"symmd {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
