"""Test helpers: structures, rotations, a tiny PET (imported by the tests)."""

import numpy as np
import torch


def tol(dtype):
    """Round-off tolerance for exact identities in ``dtype``."""
    return 1e-12 if dtype == torch.float64 else 2e-5


def random_rotations(n, seed=0, improper=True):
    """Haar-random O(3) elements (half improper when ``improper``), float64."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    rot = Rotation.random(n, random_state=rng).as_matrix()
    if improper:
        rot[::2] *= -1
    return torch.from_numpy(rot)


def cual_cell(repeat=(2, 2, 2), seed=0, rattle=0.1):
    """Rattled fcc Cu/Al cell (32 atoms for the default repeat), periodic."""
    from symmd.models import cual_cell as shipped_cell

    return shipped_cell(repeat, seed, rattle)


def cu_cluster(n=13, seed=0):
    """A rattled non-periodic Cu cluster cut from fcc."""
    import ase.build

    bulk = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True) * (3, 3, 3)
    center = bulk.positions.mean(0)
    order = np.argsort(np.linalg.norm(bulk.positions - center, axis=1))[:n]
    atoms = bulk[order]
    atoms.cell = None
    atoms.pbc = False
    atoms.positions -= atoms.positions.mean(0)
    atoms.positions += np.random.default_rng(seed).normal(scale=0.05, size=(n, 3))
    return atoms


def rotated_copy(atoms, rot):
    """ase.Atoms rotated by the 3x3 matrix ``rot`` (r -> r R^T), not wrapped."""
    new = atoms.copy()
    rot = np.asarray(rot)
    new.positions = atoms.positions @ rot.T
    if atoms.cell.rank:
        new.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    return new


def tiny_pet(seed=0, cutoff=4.0):
    """An untrained (randomly initialised, seeded) tiny metatrain PET, eager."""
    from metatrain.pet import PET
    from metatrain.utils.architectures import get_default_hypers
    from metatrain.utils.data import DatasetInfo
    from metatrain.utils.data.target_info import get_energy_target_info

    hypers = get_default_hypers("pet")["model"]
    hypers.update(
        d_pet=8,
        d_head=8,
        d_node=16,
        d_feedforward=16,
        num_heads=1,
        num_attention_layers=1,
        num_gnn_layers=2,
        cutoff=cutoff,
    )
    info = DatasetInfo(
        length_unit="angstrom",
        atomic_types=[13, 29],
        targets={"energy": get_energy_target_info("energy", {"unit": "eV"})},
    )
    torch.manual_seed(seed)
    return PET(hypers, info)


#: what running Python and the test tools creates in a checkout (not litter)
CACHE_PARTS = ("__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".egg-info")


def checkout_files(root):
    """The files of the checkout at ``root`` that git does not track, as git
    status lines (``?? path`` untracked, ``!! path`` ignored; an ignored
    directory is one entry), without Python and tool caches; ``None`` when
    ``root`` is not a git checkout or git is missing. (Edits of tracked files
    are left out: a developer may edit while the tests run.)"""
    import subprocess

    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--ignored=matching", "--untracked-files=all"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return {
        line
        for line in done.stdout.splitlines()
        if line[:2] in ("??", "!!") and not any(part in line for part in CACHE_PARTS)
    }
