"""Models that ship with symmd (trained with metatrain on ASE EMT data; see
``examples/train_model/``)."""

from __future__ import annotations

import pathlib

import ase
import numpy as np

__all__ = ["SHIPPED_MODELS", "cual_cell", "shipped_model"]

_DATA = pathlib.Path(__file__).resolve().parent.parent / "data"

#: name -> (file, description)
SHIPPED_MODELS = {
    "pet-emt-cual": (
        "pet-emt-cual.pt",
        "tiny PET, periodic fcc Cu/Al alloys, 8-64 atoms (energy, forces, stress)",
    ),
    "pet-emt-cu-cluster": (
        "pet-emt-cu-cluster.pt",
        "tiny PET, non-periodic Cu clusters of 6-20 atoms",
    ),
    "pet-emt-cual-direct": (
        "pet-emt-cual-direct.pt",
        "tiny PET with direct force/stress heads, Cu/Al bulk and clusters to 108 atoms",
    ),
}


def shipped_model(name: str = "pet-emt-cual") -> str:
    """Path of a shipped metatomic model file, by name (see ``SHIPPED_MODELS``)."""
    if name not in SHIPPED_MODELS:
        raise ValueError(f"unknown shipped model {name!r}; choose among {sorted(SHIPPED_MODELS)}")
    path = _DATA / SHIPPED_MODELS[name][0]
    if not path.exists():
        raise FileNotFoundError(f"the shipped model file {path} is missing; reinstall symmd")
    return str(path)


def cual_cell(
    repeat: tuple[int, int, int] = (2, 2, 2), seed: int = 0, rattle: float = 0.0
) -> ase.Atoms:
    """The structure the shipped ``pet-emt-cual`` model is made for: fcc Cu
    (a = 3.7 A, cubic cell) repeated ``repeat`` times (32 atoms for the
    default), about 30% of the sites Al (seeded), positions rattled by a
    Gaussian of ``rattle`` A (seeded). Periodic."""
    import ase.build

    atoms = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True) * repeat
    rng = np.random.default_rng(seed)
    atoms.numbers[rng.random(len(atoms)) < 0.3] = 13
    if rattle:
        atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
    return atoms
