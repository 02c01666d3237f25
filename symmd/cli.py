"""The ``symmd`` command: ``md``, ``diagnose``, ``training``, ``finetune``, ``export``,
``plot``, ``select``, ``models``.

Errors in the arguments or the inputs end with one line on stderr and exit
status 2; a run stopped by the monitor exits with status 3 and its reason;
Ctrl-C ends ``symmd md`` after the current step with status 130.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Optional

from ._logplot import plot_log
from ._md_command import default_structure, model_path, read_frames, run_md
from ._modes import MODES

__all__ = ["default_structure", "main", "plot_log"]

MODEL_HELP = (
    "exported metatomic model (.pt), metatrain checkpoint (.ckpt: unpickled, load only "
    "files you trust) or a shipped model name, see `symmd models` (default: pet-emt-cual)"
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: error: MESSAGE`` on stderr, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(kind, low: float, strict: bool, what: str):
    """An argparse type: a finite ``kind`` above ``low`` (strictly or not)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < low or (strict and value == low):
            bound = f"> {low:g}" if strict else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"must be {what} {bound}, got {text!r}")
        return value

    return parse


_POSITIVE = _number(float, 0, True, "a number")
_NON_NEGATIVE = _number(float, 0, False, "a number")
_COUNT = _number(int, 0, False, "an integer")
_POSITIVE_INT = _number(int, 0, True, "an integer")


def _threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _md(args) -> int:
    _threads(args)
    try:
        return run_md(args)
    except ValueError as error:  # say the command-line spelling of the fix
        text = str(error).replace("max_copies=None", "--max-copies 0")
        raise ValueError(
            text.replace("use non_conservative=False", "drop --non-conservative")
        ) from None


def _models(args) -> int:
    from .models import SHIPPED_MODELS, shipped_model

    for name, (_, description) in SHIPPED_MODELS.items():
        print(f"{name:<22}{description}")
        if args.paths:
            print(f"{'':<22}{shipped_model(name)}")
    return 0


def _diagnose(args) -> int:
    from .diagnose import diagnose

    _threads(args)
    frames = []
    for path in args.structures or [None]:
        frames.extend(read_frames(path) if path else [default_structure()])
    result = diagnose(
        model_path(args.model),
        frames,
        max_lambda=args.max_lambda,
        quadrature=args.degree,
        properties=args.properties,
        layers=args.layers,
        batch_size=args.batch_size,
        auc_threshold=args.auc_threshold,
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
    from ase.io.formats import string2index

    from .training import diagnose_training, plot_training, save_json

    _threads(args)
    index = string2index(args.index)
    if isinstance(index, str):
        raise ValueError(f"--index must be an int or a slice like ':' or '::2', got {args.index!r}")
    selected = read_frames(args.structures)[index]
    frames = selected if isinstance(selected, list) else [selected]
    if not frames:
        raise ValueError(f"--index {args.index!r} selects no frame of {args.structures!r}")
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


def _finetune(args) -> int:
    from ._finetune_budget import format_scan
    from .finetune import MODES, finetune

    _threads(args)
    if args.gamma is None and args.max_mae_increase is None:
        raise ValueError("give --gamma G [G ...], or --max-mae-increase to scan a default grid")
    trainable = args.trainable or ["readout"]
    if len(trainable) == 1 and trainable[0] in MODES:
        trainable = trainable[0]
    results = finetune(
        args.checkpoint,
        args.train,
        gamma=None if args.gamma is None else list(args.gamma),
        valid=args.valid,
        trainable=trainable,
        rank=args.rank,
        alpha=args.alpha,
        rotations=args.rotations,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        augment=not args.no_augment,
        seed=args.seed,
        out=args.output,
        labels=not args.no_labels,
        degree=args.degree,
        max_mae_increase=args.max_mae_increase,
        progress=not args.quiet,
    )
    if args.max_mae_increase is not None:
        chosen = results if not isinstance(results, list) else results[0]
        print(format_scan(chosen.scan or {}))
        print(f"wrote {args.output}/scan.json; selected model: {chosen.paths.get('model')}")
        return 0
    results = results if isinstance(results, list) else [results]
    where = results[0].metrics["evaluated_on"]
    print(f"{where} set, A: rms over structures (energy) / atoms (forces), degree {args.degree}")
    print("   gamma  E MAE meV/at  A_E meV/at  F MAE meV/A  A_F meV/A   A_F/F")
    for result in results:
        m = result.metrics["metrics"]
        e, f = m["energy"], m["forces"]
        print(
            f"{result.gamma:8g}  {1e3 * e.get('mae', float('nan')):12.3f}"
            f"  {1e3 * e['A_per_atom_rms']:10.4f}  {1e3 * f.get('mae', float('nan')):11.2f}"
            f"  {1e3 * f['A_rms']:9.3f}  {f['A_over_rms']:.2e}"
        )
    print(f"wrote {args.output}/gamma_*/ (model.ckpt, model.pt, result.json)")
    if len(results) > 1:
        print(f"wrote {args.output}/summary.json and {args.output}/tradeoff.png")
    return 0


def _select(args) -> int:
    from .uncertainty import select_frames

    found = select_frames(args.trajectory, args.lo, args.hi, out=args.output, array=args.array)
    skipped = (
        f" ({len(found.skipped)} frames without {args.array} skipped)" if found.skipped else ""
    )
    print(
        f"selected {found.count} of {len(found.values)} frames with max {args.array} in "
        f"[{args.lo:g}, {args.hi:g}){skipped}; wrote {args.output}"
    )
    return 0


def _degree(text: str):
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer degree or 'auto', got {text!r}")
    return value


def _plot(args) -> int:
    plot_log(args.log, args.output)
    print(f"wrote {args.output}")
    return 0


def _export(args) -> int:
    from .export import export

    structure = None
    if args.degree == "auto":
        structure = read_frames(args.structure)[0] if args.structure else default_structure()
    exported = export(
        model_path(args.model),
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
        "--max-lambda", type=_COUNT, default=4, help="highest order of the spectrum (default 4)"
    )
    parser.add_argument(
        "--degree", type=_COUNT, help="quadrature degree (default 2 x max-lambda, exact)"
    )
    parser.add_argument(
        "--properties",
        nargs="+",
        help="outputs to diagnose (default: energy, forces, stress when periodic and the "
        "outputs the model declares, except its internal mtt::aux::* ones)",
    )
    parser.add_argument(
        "--layers", nargs="+", help="submodules of an eager model (.ckpt) to diagnose too"
    )
    parser.add_argument(
        "--batch-size", type=_POSITIVE_INT, help="rotated copies per model call (memory bound)"
    )
    _threads_option(parser)


def _threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=_POSITIVE_INT,
        help="CPU threads of torch (torch.set_num_threads; default: torch's, i.e. "
        "OMP_NUM_THREADS or every core; on a shared machine use the cores you have)",
    )


def _md_parser(sub) -> None:
    md = _command(
        sub,
        _md,
        "md",
        help="run monitored MD",
        description="Run MD with a (symmetrized) model; the monitor checks every step and "
        "stops an unstable run (exit 3). Ctrl-C ends the run after the current step "
        "(exit 130) with the log complete.",
    )
    md.add_argument(
        "structure",
        nargs="?",
        help="structure file read by ASE; slabs, wires and boxed molecules are fine "
        "(default: a built-in 32-atom Cu/Al cell)",
    )
    md.add_argument(
        "--index",
        type=int,
        help="frame of a multi-frame structure file (default: the first, with a note)",
    )
    md.add_argument("--model", help=MODEL_HELP)
    md.add_argument("--steps", type=_COUNT, default=200, help="number of MD steps (default 200)")
    md.add_argument("--timestep", type=_POSITIVE, default=2.0, help="time step in fs (default 2)")
    md.add_argument(
        "--temperature",
        type=_NON_NEGATIVE,
        default=300.0,
        help="temperature in K: of the Langevin bath and of the initial velocities (default 300)",
    )
    md.add_argument(
        "--ensemble",
        choices=["nve", "langevin"],
        default="langevin",
        help="langevin (NVT, default) or nve (velocity Verlet; the monitor then checks "
        "energy drift)",
    )
    md.add_argument(
        "--friction",
        type=_POSITIVE,
        help="Langevin friction in 1/fs (default 0.02, a 50 fs relaxation time)",
    )
    md.add_argument(
        "--symmetrize",
        choices=[*MODES, "adaptive"],
        default="none",
        help="none: the raw model (default); project: zero net force (and net torque "
        "without periodicity) and a symmetric stress, free; average: O(3) average over "
        "the --degree rule (exactly equivariant); average+project: both (for direct "
        "forces); adaptive: raw until the monitor flags a step, then the flag's cure "
        "(projection for momentum and net force/torque, averaging otherwise)",
    )
    md.add_argument(
        "--non-conservative",
        action="store_true",
        help="take forces (and stress) from the model's direct non_conservative_force/"
        "stress outputs: no backward pass, but an unconstrained direct force has a net "
        "force and torque that the monitor flags; add --symmetrize project (free) to "
        "remove them",
    )
    md.add_argument(
        "--degree",
        type=_degree,
        default=3,
        help="quadrature degree for averaging, or 'auto' (smallest rule within --tolerance; "
        "default 3: 48 rotated copies)",
    )
    md.add_argument(
        "--tolerance",
        type=_POSITIVE,
        default=1e-3,
        help="with --degree auto: largest RMS force residual of the average, eV/A (default 1e-3)",
    )
    md.add_argument(
        "--max-copies",
        type=_COUNT,
        default=5000,
        help="refuse averaging rules with more rotated copies than this, each a model "
        "evaluation per step (default 5000; 0 allows any size)",
    )
    md.add_argument(
        "--monitor-every",
        type=_COUNT,
        default=10,
        help="estimate the equivariance error every N steps from 2 extra rotated "
        "evaluations (default 10); 0 turns the estimate off, the per-step physical "
        "checks (distances, forces, temperature, NaN) stay on",
    )
    md.add_argument(
        "--action",
        choices=["warn", "raise", "symmetrize"],
        default="raise",
        help="reaction to a flagged step: raise stops the run with a one-line reason "
        "(default), warn logs and continues, symmetrize switches to averaging. With "
        "--symmetrize adaptive the first flag always switches to averaging and the "
        "action applies to flags that persist while averaging (a collision)",
    )
    md.add_argument(
        "--log",
        default="symmd-md.csv",
        help="CSV log of the monitor (default symmd-md.csv); an existing file is kept "
        "and the run logs to NAME.1.csv, NAME.2.csv, ... unless --overwrite",
    )
    md.add_argument(
        "--trust",
        nargs=2,
        type=_NON_NEGATIVE,
        metavar=("LO", "HI"),
        help="trust levels of the largest per-atom equivariance error of the forces, eV/A "
        "(DP-GEN style): checks in [LO, HI) are logged as candidates, HI or above is a flag "
        "(the --action applies); see symmd.uncertainty.trust_levels to choose them",
    )
    md.add_argument("--overwrite", action="store_true", help="replace an existing --log")
    md.add_argument(
        "--trajectory",
        help="extxyz trajectory to write (replaced if it exists); frames at checked steps "
        "carry the per-atom equivariance error of the forces, equivariance_error_forces (eV/A)",
    )
    md.add_argument(
        "--trajectory-every",
        type=_POSITIVE_INT,
        default=10,
        help="write every N steps (default 10)",
    )
    md.add_argument(
        "--device", help="torch device: cpu, cuda, cuda:N, mps (default: the model's preferred)"
    )
    _threads_option(md)
    md.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    md.add_argument("--quiet", action="store_true", help="no progress bar")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    found = []
    for name in ("torch", "ase", "metatomic-torch"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:  # pragma: no cover - depends on the install
            found.append(f"{name} missing")
    return f"symmd {__version__} ({', '.join(found)})"


def _command(sub, run, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand ``name`` whose arguments go to ``run``."""
    parser = sub.add_parser(name, **kwargs)
    parser.set_defaults(run=run)
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="symmd",
        description="Measure and restore the rotational symmetry of ML potentials in MD.",
    )
    parser.add_argument(
        "--version", action="version", version=_version(), help="print the versions and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _md_parser(sub)

    diag = _command(
        sub,
        _diagnose,
        "diagnose",
        help="equivariance error and character spectrum",
        description="Equivariance error and character spectrum of every output.",
    )
    diag.add_argument(
        "structures",
        nargs="*",
        help="structure files (all frames are used; default: the built-in cell)",
    )
    diag.add_argument("--model", help=MODEL_HELP)
    _spectrum_options(diag)
    diag.add_argument(
        "--auc-threshold",
        type=_NON_NEGATIVE,
        default=0.1,
        help="with force labels: the per-atom error (eV/A) above which an atom counts as "
        "wrong for the ROC-AUC of A against |F - F_ref| (default 0.1)",
    )
    diag.add_argument("--json", help="write the result as JSON")
    diag.add_argument("--plot", help="write the spectra as a figure")

    train = _command(
        sub,
        _training,
        "training",
        help="spectra along a training run (heatmaps lambda x epoch)",
        description="Character spectra of every output and layer along checkpoint series; "
        "one heatmap row per run, and their log ratio for two runs.",
    )
    train.add_argument(
        "runs",
        nargs="+",
        metavar="[LABEL=]FOLDER",
        help="folder of checkpoints (*.ckpt, else *.pt) named with their epoch, e.g. "
        "epoch_012.ckpt (checkpoints are unpickled: use trusted files only)",
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

    tune = _command(
        sub,
        _finetune,
        "finetune",
        help="retrain a model with an equivariance penalty (readout, LoRA or all)",
        description="Retrain a metatrain checkpoint with "
        "L = L_mu + gamma * L_sigma: L_mu the mean squared error of the energy per atom, "
        "forces and stress against the labels (ASE calculator results or info/arrays "
        "'energy', 'forces', 'stress'/'virial'), L_sigma the unbiased estimate of the "
        "equivariance error A^2 over random O(3) draws, each output divided by its label "
        "variance. One run per gamma, from the same checkpoint; each writes "
        "DIR/gamma_<g>/model.ckpt, model.pt (exported metatomic model; LoRA adapters "
        "merged) and result.json (held-out MAE, A and the weight outside the allowed "
        "symmetry sector); several gammas also give DIR/tradeoff.png (model error vs "
        "equivariance error). With --max-mae-increase, the un-fine-tuned model is measured "
        "too (DIR/raw/) and the run with the lowest force A within the budget is selected "
        "(table printed, DIR/scan.json).",
    )
    tune.add_argument("checkpoint", help="metatrain checkpoint (.ckpt; not an exported .pt)")
    tune.add_argument("--train", required=True, help="labelled training structures (extxyz)")
    tune.add_argument("--valid", help="labelled held-out structures (default: the training set)")
    tune.add_argument(
        "--gamma",
        type=float,
        nargs="+",
        help="penalty weights (>= 0), e.g. 0 1 10 (default with --max-mae-increase: "
        "1 10 100 1000 10000)",
    )
    tune.add_argument(
        "--max-mae-increase",
        type=float,
        metavar="FRACTION",
        help="accuracy budget: select the run with the lowest force A whose validation "
        "force MAE is at most (1 + FRACTION) x that of the un-fine-tuned model, e.g. 0.10",
    )
    tune.add_argument(
        "--trainable",
        nargs="+",
        metavar="MODE|PATTERN",
        help="what is trained: 'readout' (default: PET's heads and last layers), 'lora' "
        "(the readout plus low-rank adapters on every other linear layer), 'all', or glob "
        "patterns of parameter names",
    )
    tune.add_argument("--rank", type=int, default=4, help="LoRA rank (default 4)")
    tune.add_argument("--alpha", type=float, help="LoRA scale alpha (default: the rank)")
    tune.add_argument(
        "--no-augment",
        action="store_true",
        help="fit the labels on the unrotated structure only (default: on the rotated "
        "copies, i.e. with data augmentation)",
    )
    tune.add_argument(
        "--rotations", type=int, default=2, help="random O(3) draws per structure (default 2)"
    )
    tune.add_argument("--epochs", type=int, default=10, help="epochs (default 10)")
    tune.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    tune.add_argument("--batch-size", type=int, default=8, help="structures per step (default 8)")
    tune.add_argument(
        "--degree", type=int, default=7, help="quadrature degree of the held-out A (default 7)"
    )
    tune.add_argument(
        "--no-labels", action="store_true", help="train on the penalty alone (no labels)"
    )
    tune.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    tune.add_argument("--quiet", action="store_true", help="no progress bar")
    tune.add_argument("-o", "--output", required=True, help="output folder")
    _threads_option(tune)
    exp = _command(
        sub,
        _export,
        "export",
        help="write a symmetrized metatomic model for i-PI, LAMMPS, torch-sim, ASE",
        description="Export a metatomic model that averages MODEL over an exact O(3) rule "
        "inside any metatomic engine, optionally monitoring its equivariance error.",
    )
    exp.add_argument("model", help="metatomic .pt file, metatrain .ckpt or a shipped model name")
    exp.add_argument("-o", "--output", required=True, help="the exported .pt file")
    exp.add_argument(
        "--symmetrize",
        choices=list(MODES),
        default="average",
        help="average over the O(3) rule (default), raw predictions, project the "
        "non-conservative outputs (net force/torque, symmetric stress), or "
        "average+project: both",
    )
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

    plot = _command(
        sub,
        _plot,
        "plot",
        help="plot a monitor log",
        description="Plot the equivariance error, temperature and energy of a monitor log "
        "against time, with mode switches and flagged checks marked.",
    )
    plot.add_argument("log", help="CSV log written by symmd md / Monitor")
    plot.add_argument("-o", "--output", required=True, help="figure file (png, pdf, ...)")

    select = _command(
        sub,
        _select,
        "select",
        help="pick frames by their per-atom equivariance error (candidates for labelling)",
        description="Write the frames of a trajectory whose largest per-atom equivariance "
        "error of the forces lies in [LO, HI) (DP-GEN trust levels: the candidates for "
        "labelling and retraining) and print how many. Frames without the array (steps "
        "the monitor did not check) are skipped.",
    )
    select.add_argument("trajectory", help="extxyz trajectory written by symmd md --trajectory")
    select.add_argument("--lo", type=_NON_NEGATIVE, required=True, help="lower level, eV/A")
    select.add_argument(
        "--hi", type=_POSITIVE, default=math.inf, help="upper level, eV/A (default: none)"
    )
    select.add_argument("-o", "--output", required=True, help="extxyz file of the selected frames")
    select.add_argument(
        "--array",
        default="equivariance_error_forces",
        help="per-atom array to select on (default equivariance_error_forces)",
    )

    models = _command(
        sub,
        _models,
        "models",
        help="list the shipped models",
        description="The models that ship with symmd, usable as --model NAME.",
    )
    models.add_argument("--paths", action="store_true", help="print each model's file too")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``symmd`` command with ``argv`` (default: ``sys.argv[1:]``);
    returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError, OSError) as error:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"symmd {args.command}: error: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
