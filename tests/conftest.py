"""Fixtures shared by the tests (helpers live in helpers.py)."""

import pathlib

import pytest
import torch
from helpers import checkout_files, tiny_pet

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture(scope="session")
def pet_checkpoint(tmp_path_factory):
    """Path of a metatrain checkpoint (.ckpt) of an untrained tiny PET."""
    path = tmp_path_factory.mktemp("pet") / "epoch_000.ckpt"
    torch.save(tiny_pet().get_checkpoint(), path)
    return str(path)


@pytest.fixture(scope="session", autouse=True)
def checkout_stays_clean():
    """Fail the session if the tests leave new files in the git checkout
    (ignored ones included: a run log in the repository root is as much
    litter as an untracked file). Skipped outside a git checkout."""
    before = checkout_files(ROOT)
    yield
    if before is None:
        return
    after = checkout_files(ROOT)
    new = sorted((after or set()) - before)
    if new:
        pytest.fail(
            "the tests left files in the checkout (write them under tmp_path instead): "
            + ", ".join(new),
            pytrace=False,
        )
