"""Fixtures shared by the tests (helpers live in helpers.py)."""

import pytest
import torch
from helpers import tiny_pet


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture(scope="session")
def pet_checkpoint(tmp_path_factory):
    """Path of a metatrain checkpoint (.ckpt) of an untrained tiny PET."""
    path = tmp_path_factory.mktemp("pet") / "epoch_000.ckpt"
    torch.save(tiny_pet().get_checkpoint(), path)
    return str(path)
