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

Everything is seeded through ``numpy.random.default_rng(seed)``, so running this
script twice with the same arguments produces identical files.

Usage::

    python generate_data.py --seed 0 --n-periodic 300 --n-cluster 300 --prefix train_
    python generate_data.py --seed 12345 --n-periodic 50 --n-cluster 50 --prefix test_
"""

import argparse

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

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


def _attach(atoms, with_stress):
    atoms.calc = EMT()
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    results = {"energy": energy, "forces": forces}
    if with_stress:
        results["stress"] = atoms.get_stress(voigt=True)  # eV/A^3, ASE sign
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-periodic", type=int, default=300)
    parser.add_argument("--n-cluster", type=int, default=300)
    parser.add_argument("--n-plate", type=int, default=0)
    parser.add_argument("--prefix", default="train_", help="output file prefix")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    periodic = [make_periodic(rng) for _ in range(args.n_periodic)]
    clusters = [make_cluster(rng) for _ in range(args.n_cluster)]
    sets = [("periodic", periodic), ("cluster", clusters)]
    if args.n_plate:  # drawn after the others: the other files do not change
        sets.append(("plate", [make_plate(rng) for _ in range(args.n_plate)]))

    for name, frames in sets:
        write(f"{args.prefix}{name}.xyz", frames, format="extxyz")
    for name, frames in sets:
        n_at = sum(len(f) for f in frames)
        print(f"{args.prefix}{name}.xyz: {len(frames)} structures, {n_at} atoms")


if __name__ == "__main__":
    main()
