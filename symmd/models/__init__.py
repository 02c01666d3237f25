"""Model adapters and the batched evaluation of rotated copies.

``load(model)`` wraps a metatomic model (path or ``AtomisticModel``), an ASE
calculator or a torch callable; ``evaluate_rotated(adapter, atoms, rotations)``
evaluates every rotated copy in chunks, one model call each, sharing one
neighbour list per structure. ``shipped_model(name)`` gives the path of a
model that ships with symmd.
"""

from ._adapters import Adapter, AseAdapter, CallableAdapter, MetatomicAdapter, load
from ._engine import PROPERTIES, Batch, evaluate_rotated
from ._shipped import SHIPPED_MODELS, shipped_model
from ._structures import NeighborPairs, Structures, as_structures, neighbor_pairs

__all__ = [
    "Adapter",
    "AseAdapter",
    "Batch",
    "CallableAdapter",
    "MetatomicAdapter",
    "NeighborPairs",
    "PROPERTIES",
    "SHIPPED_MODELS",
    "Structures",
    "as_structures",
    "evaluate_rotated",
    "load",
    "neighbor_pairs",
    "shipped_model",
]
