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
