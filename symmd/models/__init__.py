"""Model adapters and the batched evaluation of rotated copies.

``load(model)`` wraps a metatomic model (exported ``.pt``, metatrain
checkpoint ``.ckpt`` or ``AtomisticModel``), an ASE calculator or a torch
callable; ``evaluate_rotated(adapter, atoms, rotations)``
evaluates every rotated copy in chunks, one model call each, sharing one
neighbour list per structure (kept across the calls of a run by a
``Reuse``). ``shipped_model(name)`` gives the path of a
model that ships with symmd.
"""

from ._adapters import Adapter, AseAdapter, CallableAdapter, MetatomicAdapter
from ._engine import (
    CPU_ATOMS_PER_CALL,
    CPU_PAIRS_PER_CALL,
    PROPERTIES,
    PROPERTY_KINDS,
    chunk_plan,
    evaluate_rotated,
)
from ._load import load, quiet_torchscript
from ._outputs import EQUIVARIANT_SECTORS, Extra, Responses
from ._reuse import Reuse
from ._rotate import rotate
from ._shipped import SHIPPED_MODELS, cual_cell, shipped_model
from ._structures import Batch, NeighborPairs, Structures, as_structures, neighbor_pairs

__all__ = [
    "CPU_ATOMS_PER_CALL",
    "CPU_PAIRS_PER_CALL",
    "EQUIVARIANT_SECTORS",
    "Adapter",
    "AseAdapter",
    "Batch",
    "CallableAdapter",
    "Extra",
    "MetatomicAdapter",
    "NeighborPairs",
    "PROPERTIES",
    "PROPERTY_KINDS",
    "Responses",
    "Reuse",
    "SHIPPED_MODELS",
    "Structures",
    "as_structures",
    "chunk_plan",
    "cual_cell",
    "evaluate_rotated",
    "load",
    "neighbor_pairs",
    "quiet_torchscript",
    "rotate",
    "shipped_model",
]
