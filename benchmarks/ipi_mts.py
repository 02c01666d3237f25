"""Multiple time stepping (MTS) in i-PI with two symmd-exported models.

Direct forces are cheap and drive the inner loop; the conservative forces of
the same model correct them in the outer loop (Bigi et al., "The dark side of
the forces"): with i-PI's ``<nmts>[1, M]</nmts>`` and ``mts_weights`` on
each ``<force>``, the outer step (every M inner steps) applies
``F_conservative - F_direct`` and the inner steps ``F_direct``, so that the
trajectory follows the conservative forces on average and the conserved
quantity is that of the conservative energy. Each forcefield is served by
its own ``i-pi-py_driver -m metatomic`` process (``non_conservative=True``
for the direct one); the direct model is exported with
``symmetrize="project"``, so its forces have no net force and, without
periodic directions, no net torque.

``run_mts`` writes the input, starts the server and both drivers in a
folder, waits, ends every process whatever happens, and returns the
properties and the trajectory in ASE units. Used by
``benchmarks/stability.py`` and ``tests/test_ipi.py``.

    python benchmarks/ipi_mts.py MODEL.pt [--steps 50] [--out DIR]
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import time
import uuid

import numpy as np
from ase import units

#: the input, formatted by :func:`mts_input` (README, "Running in other engines")
INPUT = """<simulation verbosity="low" safe_stride="100000" sockets_prefix="{prefix}">
  <output prefix="sim">
    <properties stride="{stride}" filename="out">[step, time{{picosecond}}, conserved{{electronvolt}}, potential{{electronvolt}}, kinetic_md{{electronvolt}}, temperature{{kelvin}}]</properties>
    <trajectory filename="pos" stride="{stride}" format="ase">positions{{ase}}</trajectory>
    <trajectory filename="mom" stride="{stride}" format="ase">momenta{{ase}}</trajectory>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>{seed}</seed></prng>
  <ffsocket name="conservative" mode="unix" pbc="false">
    <address>{address}-c</address> <latency>1e-4</latency>
  </ffsocket>
  <ffsocket name="direct" mode="unix" pbc="false">
    <address>{address}-d</address> <latency>1e-4</latency>
  </ffsocket>
  <system>
    <initialize nbeads="1">
      <file mode="ase">init.xyz</file>
      <velocities mode="manual">{velocities}</velocities>
    </initialize>
    <forces>
      <force forcefield="conservative"> <mts_weights>[1, 0]</mts_weights> </force>
      <force forcefield="direct"> <mts_weights>[-1, 1]</mts_weights> </force>
    </forces>
    <ensemble><temperature units="kelvin">{temperature}</temperature></ensemble>
    <motion mode="dynamics">
      <fixcom>False</fixcom>
      <dynamics mode="{ensemble}">
        <timestep units="femtosecond">{outer_fs}</timestep>
        <nmts>[1, {inner}]</nmts>{thermostat}
      </dynamics>
    </motion>
  </system>
</simulation>
"""
LANGEVIN = """
        <thermostat mode="langevin"><tau units="femtosecond">{tau}</tau></thermostat>"""


def tool(name: str) -> str:
    """The console script ``name`` next to this Python, else on the PATH."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    found = path if os.path.exists(path) else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: pip install ipi")
    return found


def mts_input(
    *,
    prefix: str,
    address: str,
    velocities: np.ndarray,
    steps: int,
    outer_fs: float,
    inner: int,
    temperature: float,
    seed: int = 0,
    stride: int = 1,
    friction_per_fs: float | None = None,
) -> str:
    """The i-PI input: ``steps`` outer steps of ``outer_fs`` fs, each made of
    ``inner`` steps with the direct forces; NVE, or Langevin with the friction
    ``friction_per_fs`` (i-PI's ``tau`` is its inverse); initial
    ``velocities [N, 3]`` in ASE units (A per ASE time unit)."""
    thermostat = ""
    ensemble = "nve"
    if friction_per_fs is not None:
        ensemble = "nvt"
        thermostat = LANGEVIN.format(tau=1.0 / friction_per_fs)
    # atomic units: i-PI ignores the units of a manual vector
    au = np.asarray(velocities) * units.AUT / units.Bohr
    values = ", ".join(f"{v:.17g}" for v in au.ravel())
    return INPUT.format(
        prefix=prefix,
        address=address,
        velocities=f"[{values}]",
        steps=steps,
        outer_fs=outer_fs,
        inner=inner,
        temperature=temperature,
        seed=seed,
        stride=stride,
        ensemble=ensemble,
        thermostat=thermostat,
    )


def _read_trajectory(path: pathlib.Path, quantity: str) -> np.ndarray:
    """Frames of an i-PI trajectory written as extxyz (``format="ase"``, 8
    decimals, where i-PI's own xyz keeps 6 digits): ``[F, N, 3]``."""
    import ase.io

    return np.array([frame.arrays[quantity] for frame in ase.io.read(path, ":")])


def run_mts(
    folder,
    atoms,
    direct_model,
    conservative_model,
    *,
    steps: int,
    outer_fs: float = 4.0,
    inner: int = 4,
    temperature: float = 300.0,
    friction_per_fs: float | None = None,
    seed: int = 0,
    stride: int = 1,
    timeout: float = 600.0,
    threads: int = 1,
) -> dict:
    """Run MTS in i-PI from ``atoms`` (positions, cell, and velocities, which
    ``atoms.get_velocities()`` gives) with two exported models (paths).
    Returns ``{"time_ps" [F], "conserved", "potential", "kinetic" [F] (eV),
    "temperature" [F] (K), "positions" [F, N, 3] (A), "momenta" [F, N, 3]
    (ASE units), "seconds"}``. Raises RuntimeError with the logs when i-PI
    fails; every process is ended in all outcomes."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    init = atoms.copy()
    init.write(folder / "init.xyz", format="extxyz")
    address = f"symmd-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    prefix = f"{folder.resolve()}/"
    text = mts_input(
        prefix=prefix,
        address=address,
        velocities=atoms.get_velocities(),
        steps=steps,
        outer_fs=outer_fs,
        inner=inner,
        temperature=temperature,
        seed=seed,
        stride=stride,
        friction_per_fs=friction_per_fs,
    )
    (folder / "input.xml").write_text(text)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    processes: list[subprocess.Popen] = []
    start = time.perf_counter()
    try:
        with open(folder / "server.log", "w") as log:
            processes.append(
                subprocess.Popen(
                    [tool("i-pi"), "input.xml"], cwd=folder, env=env, stdout=log, stderr=log
                )
            )
        server = processes[0]
        deadline = time.monotonic() + 120
        while not all(os.path.exists(f"{prefix}{address}-{k}") for k in "cd"):
            if server.poll() is not None:
                raise RuntimeError((folder / "server.log").read_text())
            if time.monotonic() > deadline:
                raise RuntimeError("i-PI did not open its sockets within 120 s")
            time.sleep(0.2)
        for key, model, direct in (("c", conservative_model, False), ("d", direct_model, True)):
            options = f"template=init.xyz,model={os.path.abspath(model)}"
            if direct:
                options += ",non_conservative=True"
            with open(folder / f"driver-{key}.log", "w") as log:
                processes.append(
                    subprocess.Popen(
                        [tool("i-pi-py_driver"), "-u", "-S", prefix, "-a", f"{address}-{key}"]
                        + ["-m", "metatomic", "-o", options],
                        cwd=folder,
                        env=env,
                        stdout=log,
                        stderr=log,
                    )
                )
        server.wait(timeout=timeout)
        if server.returncode == 0:  # the drivers end when the server closes its sockets
            for driver in processes[1:]:
                driver.wait(timeout=60)
    finally:
        for process in processes[::-1]:
            if process.poll() is None:
                process.kill()
                process.wait()
    seconds = time.perf_counter() - start
    if processes[0].returncode != 0:
        logs = [
            (folder / name).read_text() for name in ("server.log", "driver-c.log", "driver-d.log")
        ]
        raise RuntimeError("i-PI failed:\n" + "\n".join(logs))
    data = np.loadtxt(folder / "sim.out", ndmin=2)
    return {
        "time_ps": data[:, 1],
        "conserved": data[:, 2],
        "potential": data[:, 3],
        "kinetic": data[:, 4],
        "temperature": data[:, 5],
        "positions": _read_trajectory(folder / "sim.pos_0.extxyz", "positions"),
        "momenta": _read_trajectory(folder / "sim.mom_0.extxyz", "momenta"),
        "seconds": seconds,
    }


def main() -> None:
    import argparse
    import tempfile

    import ase.io

    import symmd
    from symmd._md_command import thermalize
    from symmd.models import cual_cell

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a metatomic model with direct outputs (.pt)")
    parser.add_argument("--structure", help="ASE-readable structure (default: a Cu/Al cell)")
    parser.add_argument("--steps", type=int, default=50, help="outer steps (default 50)")
    parser.add_argument("--out", help="folder for the run (default: a temporary one)")
    args = parser.parse_args()
    atoms = ase.io.read(args.structure) if args.structure else cual_cell(rattle=0.05)
    thermalize(atoms, 300.0, np.random.default_rng(0))
    folder = pathlib.Path(args.out or tempfile.mkdtemp(prefix="symmd-mts-"))
    folder.mkdir(parents=True, exist_ok=True)
    symmd.export(args.model, folder / "direct.pt", symmetrize="project")
    symmd.export(args.model, folder / "conservative.pt", symmetrize="none")
    out = run_mts(
        folder / "run", atoms, folder / "direct.pt", folder / "conservative.pt", steps=args.steps
    )
    drift = out["conserved"] - out["conserved"][0]
    p = out["momenta"].sum(1)
    print(
        f"{args.steps} outer steps in {out['seconds']:.1f} s; conserved quantity drift "
        f"{1000 * np.abs(drift).max() / len(atoms):.3f} meV/atom; |P - P0| max "
        f"{np.abs(p - p[0]).max():.3g} (ASE units); files in {folder}"
    )


if __name__ == "__main__":
    main()
