"""Reference labels of structures, for :mod:`symmd.finetune` and :func:`symmd.diagnose`.

Read from an extended XYZ file with ASE (or given as ``ase.Atoms``): the
energy, forces and stress of the attached calculator (the ``energy=``,
``forces`` and ``stress=`` fields, as ASE writes them), else
``atoms.info["energy"]``, ``atoms.arrays["forces"]``, ``atoms.info["stress"]``
(ASE sign, eV/A^3, Voigt 6 or 3x3) or ``atoms.info["virial"]`` (eV; stress =
-virial / V): the default key names of both ASE and metatrain.
"""

from __future__ import annotations

import os

import ase
import numpy as np
import torch

__all__ = ["labels_of", "read_labels", "stack_labels"]


def labels_of(atoms: ase.Atoms) -> dict[str, np.ndarray]:
    """The labels one structure carries (see the module docstring for where
    they are read): ``energy`` (eV, 0-d), ``forces`` (``[N, 3]`` eV/A),
    ``stress`` (``[3, 3]`` eV/A^3, ASE sign); only those present."""
    results = dict(getattr(atoms.calc, "results", {}) or {})
    out: dict[str, np.ndarray] = {}
    energy = results.get("energy", atoms.info.get("energy"))
    if energy is not None:
        out["energy"] = np.asarray(energy, dtype=float)
    forces = results.get("forces", atoms.arrays.get("forces"))
    if forces is not None:
        out["forces"] = np.asarray(forces, dtype=float)
    stress = results.get("stress", atoms.info.get("stress"))
    if stress is None and "virial" in atoms.info:
        stress = -np.asarray(atoms.info["virial"], dtype=float) / atoms.get_volume()
    if stress is not None:
        stress = np.asarray(stress, dtype=float)
        if stress.shape == (6,):
            from ase.stress import voigt_6_to_full_3x3_stress

            stress = voigt_6_to_full_3x3_stress(stress)
        out["stress"] = stress.reshape(3, 3)
    return out


def read_labels(source, what: str = "train", labels: bool = True):
    """Structures and their reference labels.

    ``source``: an extxyz path (every frame) or a list of ``ase.Atoms``.
    Returns ``(frames, labels)`` with ``labels[p]`` a list (one entry per
    structure) for ``p`` in energy (eV), forces ([N, 3] eV/A), stress
    ([3, 3] eV/A^3); a property labelled on no structure is absent. With
    ``labels=True`` every structure needs an energy.
    """
    if isinstance(source, (str, os.PathLike)):
        from ase.io import read

        if not os.path.exists(source):
            raise FileNotFoundError(f"{what} file {os.fspath(source)!r} does not exist")
        frames = read(os.fspath(source), index=":")
    elif isinstance(source, ase.Atoms):
        frames = [source]
    else:
        frames = list(source)
    if not frames:
        raise ValueError(f"{what} holds no structures")
    found: dict[str, list] = {"energy": [], "forces": [], "stress": []}
    for atoms in frames:
        one = labels_of(atoms)
        for name, values in found.items():
            values.append(one.get(name))
    out = {}
    for name, values in found.items():
        missing = [i for i, v in enumerate(values) if v is None]
        if len(missing) == len(values):
            continue
        if missing and (labels or name != "energy"):
            raise ValueError(
                f"{what}: structures {missing[:10]} have no {name} label while others do; "
                f"label every structure (ASE calculator results or info/arrays[{name!r}])"
            )
        out[name] = values
    if labels and "energy" not in out:
        raise ValueError(
            f"{what} has no energy labels (looked for the ASE calculator results and "
            "atoms.info['energy']); label the structures, or pass labels=False to train on "
            "the equivariance penalty alone"
        )
    return frames, out


def stack_labels(values: list, index, device) -> torch.Tensor:
    """Labels of the structures ``index``: ``[S]``, ``[S, 3, 3]`` or, for
    per-atom ``[n, 3]`` entries, concatenated ``[N, 3]``."""
    parts = [torch.as_tensor(np.asarray(values[i], dtype=float)) for i in index]
    per_atom = parts[0].ndim == 2 and parts[0].shape != (3, 3)
    return (torch.cat(parts) if per_atom else torch.stack(parts)).to(device)
