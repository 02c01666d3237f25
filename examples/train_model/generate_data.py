"""Generate EMT reference data for the small PET example models.

Two data sets are written as extended XYZ files (ASE convention, energies in eV,
forces in eV/A, stress in eV/A^3, Voigt order as stored by ASE):

* ``<prefix>periodic.xyz``: periodic fcc Cu/Al alloys (8 to 64 atoms, random
  occupations, rattled and strained), with energy, forces and stress;
* ``<prefix>cluster.xyz``: non-periodic Cu/Al clusters (6 to 20 atoms cut from
  fcc and rattled), with energy and forces only (no cell, ``pbc=False``);
* ``<prefix>plate.xyz`` (``--n-plate``, default 0): flat non-periodic Cu/Al
  clusters, 6 to 20 atoms from two adjacent (001) layers of fcc, lying in the
  xy plane of the lab frame, rattled; energy and forces. Every plate has the
  same orientation, so without rotational augmentation a model never sees a
  plate normal other than z (used by ``train_epochs.sh``).
* ``<prefix>direct.xyz`` (``--n-bulk`` periodic and ``--n-nanocluster``
  non-periodic structures, default 0; used by ``train_direct.sh``): the data of
  the direct-force model, bulk cells and clusters in one file (``info["set"]``
  is ``"bulk"`` or ``"cluster"``). Bulk: fcc Cu/Al cells of 27 to 108 atoms
  (up to 3x3x3 conventional), strained up to 2 %; clusters: 20 to 60 atoms,
  cut from fcc or built as icosahedra (55), truncated octahedra (38),
  octahedra (44) and decahedra (39). Three quarters of the structures are
  frames of short seeded EMT Langevin runs (75-200 fs at 5 fs) at a random
  temperature between 100 and 1400 K, from the ideal lattice with Maxwell-
  Boltzmann velocities; the rest are Gaussian rattles (std 0.03-0.12 A). The
  clusters carry an all-NaN stress (no cell), which metatrain skips in the
  loss.

Everything is seeded through ``numpy.random.default_rng(seed)``, so running this
script twice with the same arguments produces identical files.

Usage::

    python generate_data.py --seed 0 --n-periodic 300 --n-cluster 300 --prefix train_
    python generate_data.py --seed 12345 --n-periodic 50 --n-cluster 50 --prefix test_
    python generate_data.py --seed 0 --n-periodic 0 --n-cluster 0 --n-bulk 400 \
        --n-nanocluster 400 --prefix train_
"""

import argparse

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.cluster import Decahedron, Icosahedron, Octahedron
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta

A_CU = 3.61  # EMT-ish lattice constants (A)
A_AL = 4.05

# (kind, repetitions): conventional cubic 4-atom cell or 1-atom primitive cell
PERIODIC_TEMPLATES = [
    ("cubic", (1, 1, 2)),  # 8 atoms
    ("primitive", (2, 2, 2)),  # 8 atoms
    ("cubic", (1, 2, 2)),  # 16 atoms
    ("primitive", (3, 3, 2)),  # 18 atoms
    ("primitive", (3, 3, 3)),  # 27 atoms
    ("cubic", (2, 2, 2)),  # 32 atoms
    ("cubic", (2, 2, 3)),  # 48 atoms
    ("primitive", (4, 4, 4)),  # 64 atoms
]


def _attach(atoms, with_stress, nan_stress=False):
    atoms.calc = EMT()
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    results = {"energy": energy, "forces": forces}
    if with_stress:
        results["stress"] = atoms.get_stress(voigt=True)  # eV/A^3, ASE sign
    elif nan_stress:  # a stress column metatrain reads and leaves out of the loss
        results["stress"] = np.full(6, np.nan)
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def make_periodic(rng):
    kind, reps = PERIODIC_TEMPLATES[rng.integers(len(PERIODIC_TEMPLATES))]
    x_al = rng.uniform(0.0, 1.0)  # Al fraction of this structure
    a = (1 - x_al) * A_CU + x_al * A_AL + rng.normal(0.0, 0.03)
    atoms = bulk("Cu", "fcc", a=a, cubic=(kind == "cubic")).repeat(reps)
    symbols = np.where(rng.random(len(atoms)) < x_al, "Al", "Cu")
    atoms.set_chemical_symbols(symbols.tolist())

    # random symmetric strain, components up to ~3%
    eps = rng.uniform(-0.03, 0.03, size=(3, 3))
    eps = 0.5 * (eps + eps.T)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)

    std = rng.uniform(0.05, 0.15)
    atoms.positions += rng.normal(0.0, std, size=atoms.positions.shape)
    atoms.wrap()
    return _attach(atoms, with_stress=True)


def make_cluster(rng):
    n_atoms = int(rng.integers(6, 21))
    a = A_CU + rng.normal(0.0, 0.03)
    big = bulk("Cu", "fcc", a=a, cubic=True).repeat((4, 4, 4))
    pos = big.positions
    # center on a random atom, take its n nearest neighbours (incl. itself)
    center = pos[rng.integers(len(pos))] + rng.normal(0.0, 0.3, size=3)
    center = np.clip(center, 1.5 * a, 2.5 * a)  # stay away from the block edges
    order = np.argsort(np.linalg.norm(pos - center, axis=1))[:n_atoms]
    positions = pos[order] - pos[order].mean(axis=0)

    x_al = rng.choice([0.0, rng.uniform(0.0, 0.5)])  # half pure Cu, half alloyed
    symbols = np.where(rng.random(n_atoms) < x_al, "Al", "Cu").tolist()
    std = rng.uniform(0.05, 0.15)
    positions = positions + rng.normal(0.0, std, size=positions.shape)
    atoms = Atoms(symbols=symbols, positions=positions, pbc=False)
    return _attach(atoms, with_stress=False)


def make_plate(rng):
    n_atoms = int(rng.integers(6, 21))
    a = A_CU + rng.normal(0.0, 0.03)
    big = bulk("Cu", "fcc", a=a, cubic=True).repeat((5, 5, 2))
    pos = big.positions
    layers = pos[np.isclose(pos[:, 2], 0.0) | np.isclose(pos[:, 2], a / 2)]
    center = np.array([2.5 * a, 2.5 * a, 0.0]) + np.r_[rng.normal(0.0, 0.3, size=2), 0.0]
    in_plane = np.linalg.norm((layers - center)[:, :2], axis=1)
    positions = layers[np.argsort(in_plane)[:n_atoms]]
    positions = positions - positions.mean(axis=0)
    x_al = rng.choice([0.0, rng.uniform(0.0, 0.5)])
    symbols = np.where(rng.random(n_atoms) < x_al, "Al", "Cu").tolist()
    std = rng.uniform(0.05, 0.15)
    positions = positions + rng.normal(0.0, std, size=positions.shape)
    atoms = Atoms(symbols=symbols, positions=positions, pbc=False)
    return _attach(atoms, with_stress=False)


# direct-force model data: bulk cells up to 3x3x3 conventional (108 atoms)
BULK_TEMPLATES = [
    ("primitive", (3, 3, 3)),  # 27 atoms
    ("cubic", (2, 2, 2)),  # 32 atoms
    ("cubic", (2, 2, 3)),  # 48 atoms
    ("primitive", (4, 4, 4)),  # 64 atoms
    ("cubic", (2, 3, 3)),  # 72 atoms
    ("cubic", (3, 3, 3)),  # 108 atoms
]
CLUSTER_SHAPES = ["fcc", "icosahedron", "truncated-octahedron", "octahedron", "decahedron"]
CLUSTER_WEIGHTS = [0.5, 0.15, 0.15, 0.1, 0.1]
T_RANGE = (100.0, 1400.0)  # K, thermal disorder of the MD frames
MD_FRACTION = 0.75  # the rest are Gaussian rattles


def _alloy(atoms, x_al, rng):
    symbols = np.where(rng.random(len(atoms)) < x_al, "Al", "Cu")
    atoms.set_chemical_symbols(symbols.tolist())
    return atoms


def _disorder(atoms, rng):
    """Thermal disorder from a short EMT Langevin run (3/4 of the calls) or a
    Gaussian rattle; returns the temperature (K, 0 for a rattle)."""
    if rng.random() >= MD_FRACTION:
        atoms.positions += rng.normal(0.0, rng.uniform(0.03, 0.12), size=atoms.positions.shape)
        return 0.0
    temperature = rng.uniform(*T_RANGE)
    atoms.positions += rng.normal(0.0, 0.02, size=atoms.positions.shape)
    atoms.calc = EMT()
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    dyn = Langevin(
        atoms, 5.0 * units.fs, temperature_K=temperature, friction=0.02, fixcm=False, rng=rng
    )
    dyn.run(int(rng.integers(15, 41)))
    del atoms.arrays["momenta"]  # the frame is a structure, not a state
    return temperature


def make_bulk(rng):
    kind, reps = BULK_TEMPLATES[rng.integers(len(BULK_TEMPLATES))]
    x_al = rng.uniform(0.0, 1.0)
    a = (1 - x_al) * A_CU + x_al * A_AL + rng.normal(0.0, 0.03)
    atoms = _alloy(bulk("Cu", "fcc", a=a, cubic=(kind == "cubic")).repeat(reps), x_al, rng)
    eps = rng.uniform(-0.02, 0.02, size=(3, 3))
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
    temperature = _disorder(atoms, rng)
    atoms.wrap()
    atoms.info.update(set="bulk", temperature=temperature)
    return _attach(atoms, with_stress=True)


def make_nanocluster(rng):
    shape = rng.choice(CLUSTER_SHAPES, p=CLUSTER_WEIGHTS)
    x_al = rng.uniform(0.0, 1.0)
    a = (1 - x_al) * A_CU + x_al * A_AL + rng.normal(0.0, 0.03)
    if shape == "fcc":
        n_atoms = int(rng.integers(20, 61))
        pos = bulk("Cu", "fcc", a=a, cubic=True).repeat((5, 5, 5)).positions
        center = np.full(3, 2.5 * a) + rng.normal(0.0, 0.5, size=3)
        positions = pos[np.argsort(np.linalg.norm(pos - center, axis=1))[:n_atoms]]
        atoms = Atoms(f"Cu{n_atoms}", positions=positions)
    elif shape == "icosahedron":
        atoms = Icosahedron("Cu", 3, latticeconstant=a)  # 55 atoms
    elif shape == "truncated-octahedron":
        atoms = Octahedron("Cu", 4, 1, latticeconstant=a)  # 38 atoms
    elif shape == "octahedron":
        atoms = Octahedron("Cu", 4, 0, latticeconstant=a)  # 44 atoms
    else:
        atoms = Decahedron("Cu", 3, 2, 0, latticeconstant=a)  # 39 atoms
    atoms = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, pbc=False)
    atoms.positions -= atoms.positions.mean(axis=0)
    _alloy(atoms, x_al, rng)
    temperature = _disorder(atoms, rng)
    atoms.positions -= atoms.get_center_of_mass()
    atoms.info.update(set="cluster", temperature=temperature)
    return _attach(atoms, with_stress=False, nan_stress=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-periodic", type=int, default=300)
    parser.add_argument("--n-cluster", type=int, default=300)
    parser.add_argument("--n-plate", type=int, default=0)
    parser.add_argument("--n-bulk", type=int, default=0, help="periodic cells of direct.xyz")
    parser.add_argument("--n-nanocluster", type=int, default=0, help="clusters of direct.xyz")
    parser.add_argument("--prefix", default="train_", help="output file prefix")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    periodic = [make_periodic(rng) for _ in range(args.n_periodic)]
    clusters = [make_cluster(rng) for _ in range(args.n_cluster)]
    sets = [("periodic", periodic), ("cluster", clusters)]
    if args.n_plate:  # drawn after the others: the other files do not change
        sets.append(("plate", [make_plate(rng) for _ in range(args.n_plate)]))
    if args.n_bulk or args.n_nanocluster:  # drawn after the others, as the plates
        frames = [make_bulk(rng) for _ in range(args.n_bulk)]
        frames += [make_nanocluster(rng) for _ in range(args.n_nanocluster)]
        sets.append(("direct", frames))

    sets = [(name, frames) for name, frames in sets if frames]
    for name, frames in sets:
        write(f"{args.prefix}{name}.xyz", frames, format="extxyz")
    for name, frames in sets:
        n_at = sum(len(f) for f in frames)
        print(f"{args.prefix}{name}.xyz: {len(frames)} structures, {n_at} atoms")


if __name__ == "__main__":
    main()
