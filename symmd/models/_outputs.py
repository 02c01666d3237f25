r"""Extra model outputs (beyond energy, forces, stress) as dense tensors.

A model may declare outputs other than the energy: metatomic models list them
in their capabilities (``features``, ``mtt::aux::energy_last_layer_features``,
``non_conservative_forces``, a dipole, ...); a torch callable names them in an
``extra_outputs = {name: kind}`` attribute. symmd evaluates them on rotated
copies like any property and keeps the layout

====================  ===================================
per atom              ``[M, P, *components]``
per structure         ``[C, P, *components]``
====================  ===================================

(``M`` atoms and ``C`` copies in the chunk, ``P`` properties or channels).
How an output transforms under :math:`g` is its *kind*, read from the
metatensor components of its block:

=======================  ==========  ========================================
components               kind        back-transform (see :mod:`symmd.metrics`)
=======================  ==========  ========================================
none                     scalar      none: each channel is taken as invariant
``xyz``                  vector      :math:`u R`
``xyz_1, xyz_2``         rank2       :math:`R^T u R`
``o3_mu``                spherical   :math:`D^{(\lambda,\sigma)}(g)^{-1} u`
=======================  ==========  ========================================

Spherical blocks (keys ``o3_lambda``, ``o3_sigma``) are reported under
``name[o3_lambda=L,o3_sigma=S]``; symmd's Wigner-D basis is e3nn's, not
metatensor's, so their equivariance error is not computed (their character
spectrum does not depend on the basis and is).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

__all__ = ["EQUIVARIANT_SECTORS", "RENAMED", "Extra", "Responses", "kind_of_components"]

#: metatomic renamed these outputs (the old name stays declared as an alias)
RENAMED = {"features": "feature", "non_conservative_forces": "non_conservative_force"}

#: the physical outputs and the O(3) sectors (lambda, sigma) that an exactly
#: equivariant model fills: scalars in (0, +1), vectors in (1, +1), a
#: symmetric rank-2 tensor in (0, +1) + (2, +1)
EQUIVARIANT_SECTORS = {
    "energy": ((0, 1),),
    "energies": ((0, 1),),
    "forces": ((1, 1),),
    "non_conservative_force": ((1, 1),),
    "non_conservative_forces": ((1, 1),),
    "stress": ((0, 1), (2, 1)),
    "non_conservative_stress": ((0, 1), (2, 1)),
}


@dataclasses.dataclass
class Extra:
    """One extra output of one chunk: ``values`` with rows grouped by copy
    (``[M, P, *comp]`` per atom or ``[C, P, *comp]`` per structure)."""

    values: torch.Tensor
    kind: str
    per_atom: bool


class Responses(dict):
    """The dict returned by :func:`symmd.models.evaluate_rotated`, with
    ``kinds[name]`` (``"scalar"``, ``"vector"``, ``"rank2"`` or ``"spherical"``)
    telling how each entry transforms and ``per_atom[name]`` whether its rows
    (axis 1) are atoms or structures; ``plan`` lists the rotated copies in
    each model call, in order, and ``pairs`` the neighbour pairs
    (:class:`~symmd.models.NeighborPairs`) shared by every copy, per
    ``(cutoff, full_list)`` request."""

    def __init__(
        self,
        values: dict,
        kinds: dict,
        per_atom: dict,
        plan: Optional[list[int]] = None,
        pairs: Optional[dict] = None,
    ):
        super().__init__(values)
        self.kinds = dict(kinds)
        self.per_atom = dict(per_atom)
        self.plan = list(plan or [])
        self.pairs = dict(pairs or {})

    def take(self, copies: slice) -> Responses:
        """The rotated copies ``copies`` (a slice of axis 0) of every entry,
        with the same kinds; ``plan`` and ``pairs`` stay those of the whole
        evaluation. Views, no copy."""
        values = {key: value[copies] for key, value in self.items()}
        return Responses(values, self.kinds, self.per_atom, self.plan, self.pairs)


def kind_of_components(names: list[str]) -> str:
    """The kind of a metatensor block from its component names."""
    if not names:
        return "scalar"
    if names == ["xyz"]:
        return "vector"
    if names == ["xyz_1", "xyz_2"]:
        return "rank2"
    if names == ["o3_mu"]:
        return "spherical"
    raise ValueError(
        f"an output block has components {names}; symmd understands none, "
        "['xyz'], ['xyz_1', 'xyz_2'] and ['o3_mu']"
    )


def tensormap_to_dense(
    tensormap, name: str, n_copies: int, atom_start: torch.Tensor, n_rows_atoms: int
) -> dict[str, Extra]:
    """Dense per-copy values of every block of a metatomic output.

    Rows are placed by their ``system`` (and ``atom``) sample, so the layout
    does not depend on the order in which the model lists its samples.
    """
    out = {}
    keys = tensormap.keys
    for index in range(len(keys)):
        block = tensormap.block(index)
        label = name
        if len(keys) > 1:
            entries = ",".join(f"{k}={v}" for k, v in zip(keys.names, keys.values[index].tolist()))
            label = f"{name}[{entries}]"
        samples = block.samples
        system = samples.column("system").to(torch.long)
        per_atom = "atom" in samples.names
        extra_names = [n for n in samples.names if n not in ("system", "atom")]
        if extra_names:
            raise ValueError(
                f"the output {name!r} has samples {samples.names}; symmd handles outputs "
                "per structure ['system'] or per atom ['system', 'atom']"
            )
        components = [c.names[0] if len(c.names) == 1 else "?" for c in block.components]
        kind = kind_of_components(components)
        values = block.values
        # [rows, *comp, P] -> [rows, P, *comp]
        values = values.movedim(-1, 1) if values.ndim > 2 else values
        rows = atom_start[system] + samples.column("atom").to(torch.long) if per_atom else system
        size = n_rows_atoms if per_atom else n_copies
        dense = torch.zeros((size, *values.shape[1:]), dtype=values.dtype, device=values.device)
        out[label] = Extra(dense.index_copy(0, rows, values), kind, per_atom)
    return out
