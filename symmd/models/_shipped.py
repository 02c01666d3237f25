"""Models that ship with symmd (trained with metatrain on ASE EMT data; see
``examples/train_model/``)."""

from __future__ import annotations

import pathlib

__all__ = ["SHIPPED_MODELS", "shipped_model"]

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
}


def shipped_model(name: str = "pet-emt-cual") -> str:
    """Path of a shipped metatomic model file, by name (see ``SHIPPED_MODELS``)."""
    if name not in SHIPPED_MODELS:
        raise ValueError(f"unknown shipped model {name!r}; choose among {sorted(SHIPPED_MODELS)}")
    path = _DATA / SHIPPED_MODELS[name][0]
    if not path.exists():
        raise FileNotFoundError(f"the shipped model file {path} is missing; reinstall symmd")
    return str(path)
