import numpy as np
import pytest
import torch


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


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
    import ase.build

    atoms = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True) * repeat
    rng = np.random.default_rng(seed)
    atoms.numbers[rng.random(len(atoms)) < 0.3] = 13
    atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
    return atoms


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
