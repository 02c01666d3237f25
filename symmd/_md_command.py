"""``symmd md``: monitored MD from the command line.

Units on the command line: time step in fs, temperature in K, Langevin
friction in 1/fs (converted here to ASE's time unit: ``friction / units.fs``).
Exit status: 0 done, 2 bad arguments or input (one line on stderr), 3 stopped
by the monitor (one line naming the step, the metric, the last good frame and
the log), 130 interrupted (Ctrl-C: the current step finishes, the log is
complete; a second Ctrl-C aborts at once).
"""

from __future__ import annotations

import signal
import sys
from typing import Optional

__all__ = [
    "default_structure",
    "langevin",
    "read_frames",
    "read_structure",
    "run_md",
    "thermalize",
]


def default_structure():
    """The built-in structure: the 32-atom fcc Cu/Al cell of the shipped model."""
    from .models import cual_cell

    return cual_cell()


def read_structure(path: Optional[str], index: Optional[int], command: str = "md"):
    """One frame of ``path`` (default: :func:`default_structure`).

    Without ``index`` the first frame is used, and a note on stderr says so
    when the file holds more than one. ValueError for an empty or unreadable
    file.
    """
    if path is None:
        return default_structure()
    import os

    import ase.io

    if not os.path.exists(path):
        raise FileNotFoundError(f"structure file {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise ValueError(f"structure file {path!r} is empty")
    try:
        if index is not None:
            return ase.io.read(path, index=index)
        frames = ase.io.read(path, index=":2")
    except IndexError:
        raise ValueError(f"structure file {path!r} has no frame at --index {index}") from None
    except Exception as error:  # ASE raises many kinds for a malformed file
        raise ValueError(
            f"cannot read a structure from {path!r} ({type(error).__name__}: {error})"
        ) from None
    if not frames:
        raise ValueError(f"structure file {path!r} holds no frame")
    if len(frames) > 1:
        print(
            f"symmd {command}: note: {path} holds several frames; using the first "
            "(choose another with --index)",
            file=sys.stderr,
        )
    return frames[0]


def read_frames(path: str) -> list:
    """Every frame of ``path``; one-line errors for a missing, empty or unreadable file."""
    import os

    import ase.io

    if not os.path.exists(path):
        raise FileNotFoundError(f"structure file {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise ValueError(f"structure file {path!r} is empty")
    try:
        frames = ase.io.read(path, index=":")
    except Exception as error:  # ASE raises many kinds for a malformed file
        raise ValueError(
            f"cannot read structures from {path!r} ({type(error).__name__}: {error})"
        ) from None
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise ValueError(f"structure file {path!r} holds no frame")
    return frames


def thermalize(atoms, temperature_K: float, rng) -> None:
    """Maxwell-Boltzmann momenta at ``temperature_K`` (ASE's current function,
    ``thermalize_momenta``, where it exists)."""
    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ASE < 3.29
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
        return
    thermalize_momenta(atoms, temperature_K, rng=rng)


def langevin(atoms, timestep_fs: float, temperature_K: float, friction_per_fs: float, rng):
    """ASE's Langevin integrator with the time step in fs and the friction in
    1/fs (ASE takes both in its own time unit; ``units.fs`` converts). The
    centre of mass is not pinned (``fixcm=False``): each atom is coupled to
    the bath, which samples the canonical ensemble of all 3N degrees of
    freedom."""
    from ase import units
    from ase.md.langevin import Langevin

    return Langevin(
        atoms,
        timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
    )


def check_device(device: Optional[str]) -> None:
    """ValueError with the fix for a device torch does not know or cannot use."""
    if device is None:
        return
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ValueError(
            f"--device {device!r} is not a torch device; use cpu, cuda, cuda:N or mps"
        ) from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--device {device}: CUDA is not available here (torch {torch.__version__}"
            + (", a CPU-only build" if torch.version.cuda is None else ", no GPU visible")
            + "); use --device cpu"
        )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available here; use --device cpu")


class _Interrupted(Exception):
    pass


def model_path(name: Optional[str]) -> str:
    import os

    from .models import SHIPPED_MODELS, shipped_model

    if name is None:
        return shipped_model()
    if name in SHIPPED_MODELS:
        return shipped_model(name)
    if not os.path.exists(name) and os.sep not in name and "." not in name:
        raise ValueError(
            f"--model {name!r} is neither a file nor a shipped model; shipped models: "
            f"{', '.join(sorted(SHIPPED_MODELS))} (see `symmd models`)"
        )
    return name


def run_md(args) -> int:
    """The ``symmd md`` command (arguments already type-checked by the parser)."""
    import numpy as np
    from tqdm import tqdm

    from . import InstabilityError, Monitor, SymmetryCalculator
    from .uncertainty import ARRAY

    if args.ensemble == "nve" and args.friction is not None:
        raise ValueError("--friction applies to --ensemble langevin only")
    friction = 0.02 if args.friction is None else args.friction
    check_device(args.device)
    atoms = read_structure(args.structure, args.index)
    rng = np.random.default_rng(args.seed)
    monitor = Monitor(
        every=args.monitor_every,
        trust=args.trust,
        action=args.action,
        log=args.log,
        overwrite=args.overwrite,
        seed=args.seed,
        ensemble=args.ensemble,
        timestep=args.timestep,
    )
    calc = SymmetryCalculator(
        model_path(args.model),
        symmetrize=args.symmetrize,
        quadrature=args.degree,
        tolerance=args.tolerance,
        max_copies=args.max_copies or None,
        monitor=monitor,
        device=args.device,
        non_conservative=args.non_conservative,
        seed=args.seed,
    )
    atoms.calc = calc
    if args.log and monitor.log != args.log:
        print(f"symmd md: {args.log} exists; this run logs to {monitor.log} (--overwrite replaces)")
    thermalize(atoms, args.temperature, rng)
    if args.ensemble == "nve":
        from ase import units
        from ase.md.verlet import VelocityVerlet

        dyn = VelocityVerlet(atoms, args.timestep * units.fs)
    else:
        dyn = langevin(atoms, args.timestep, args.temperature, friction, rng)
    if args.trajectory:
        import ase.io

        def write_frame():
            # the per-atom A of the forces, in the results at checked steps only
            per_atom = calc.results.get(ARRAY)
            if per_atom is not None:
                atoms.arrays[ARRAY] = np.asarray(per_atom, dtype=np.float64)
            try:
                ase.io.write(args.trajectory, atoms, format="extxyz", append=True)
            finally:
                atoms.arrays.pop(ARRAY, None)

        open(args.trajectory, "w").close()
        dyn.attach(write_frame, interval=args.trajectory_every)
    bar = tqdm(total=args.steps, desc="symmd md", unit="step", disable=args.quiet)
    asked: list[int] = []

    def update():
        if asked:  # Ctrl-C: stop between two steps, with the log complete
            raise _Interrupted
        if dyn.nsteps == 0:  # observers also run once before the first step
            return
        post = {"T": f"{atoms.get_temperature():.0f}K", "mode": calc.mode}
        if monitor.history and "rel_forces" in monitor.history[-1]:
            post["A_F/F"] = f"{monitor.history[-1]['rel_forces']:.2e}"
        bar.set_postfix(post, refresh=False)
        bar.update(1)

    def on_sigint(signum, frame):
        if asked:  # a second Ctrl-C: abort now
            raise KeyboardInterrupt
        asked.append(signum)

    dyn.attach(update, interval=1)
    log = f"; log: {monitor.log}" if monitor.log else ""
    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: leave Ctrl-C alone
        previous = None
    try:
        dyn.run(args.steps)
    except (_Interrupted, KeyboardInterrupt) as stop:
        bar.close()
        # _Interrupted stops between two steps: every row of the log is written
        state = "log complete" if isinstance(stop, _Interrupted) else "log"
        where = f"; {state}: {monitor.log}" if monitor.log else ""
        print(f"symmd md: interrupted at step {dyn.nsteps}{where}", file=sys.stderr)
        return 130
    except InstabilityError as error:
        bar.close()
        good = f"; last good frame: {error.last_good}" if error.last_good else ""
        reason = str(error).replace("symmetrize='project'", "--symmetrize project")
        print(f"symmd md: stopped: {reason}{good}{log}", file=sys.stderr)
        return 3
    finally:
        bar.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if calc.recommendation is not None:
        print(f"symmd md: --degree auto chose {calc.recommendation}")
    print(f"symmd md: {args.steps} steps done, mode {calc.mode}, {len(monitor.events)} flags{log}")
    return 0
