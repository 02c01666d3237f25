import re

import pytest
import torch
from helpers import cu_cluster

from symmd import o3
from symmd._layers import LayerCapture, drop_padding
from symmd.models import evaluate_rotated, load


class Twice(torch.nn.Module):
    """Runs ``block`` twice and returns a tuple from ``pair``."""

    atomic_types = [29]

    def __init__(self):
        super().__init__()
        self.block = torch.nn.Identity()
        self.pair = PairOut()

    def forward(self, positions, types, cell, pbc, system_index):
        a = self.block(positions)
        b = self.block(2 * positions)
        node, per_copy = self.pair(a + b, cell)
        energy = torch.zeros(cell.shape[0], dtype=positions.dtype).index_add(
            0, system_index, node.sum(-1)
        )
        return {"energy": energy + 0 * per_copy.sum()}


class PairOut(torch.nn.Module):
    def forward(self, x, cell):
        return x, cell.reshape(cell.shape[0], 9)


def test_capture_labels_tuples_and_repeated_calls_and_stacks_by_copy():
    model = Twice()
    adapter = load(model)
    q = o3.quadrature(2)
    atoms = cu_cluster(4)
    capture = LayerCapture(adapter.hook_root(), ["block", "pair"])
    with capture:
        out = evaluate_rotated(adapter, atoms, q, ("energy",), batch_size=10)
    assert out.plan == [8, 8, 8]
    stacked = capture.stacked(out.plan)
    assert list(stacked) == ["block", "block#1", "pair[0]", "pair[1]"]
    rotated = torch.einsum(
        "nj,kij->kni", torch.from_numpy(atoms.positions), q.rotations
    )  # [K, N, 3]
    feats, shape = stacked["block"]
    assert shape == (4, 3) and feats.shape == (24, 12)
    assert torch.allclose(feats, rotated.reshape(24, 12), atol=1e-12)
    assert torch.allclose(stacked["block#1"][0], 2 * rotated.reshape(24, 12), atol=1e-12)
    assert stacked["pair[1]"][1] == (1, 9)  # one row per copy
    with pytest.raises(RuntimeError, match=re.escape("captured 3 forward calls for 2 chunks")):
        capture.stacked([12, 12])
    # hooks are gone after the context
    assert not model.block._forward_hooks and not model._forward_pre_hooks


def test_capture_rejects_a_layout_that_is_not_grouped_by_copy():
    model = Twice()
    adapter = load(model)
    capture = LayerCapture(adapter.hook_root(), ["block"])
    with capture:
        evaluate_rotated(adapter, cu_cluster(4), o3.quadrature(1), ("energy",), batch_size=5)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "the layer output 'block' has shape (16, 3), whose first axis is not a multiple of the 3 rotated copies of its chunk"
        ),
    ):
        capture.stacked([3, 5])


def test_drop_padding_keeps_the_real_neighbour_slots():
    counts = torch.tensor([2, 0, 3])
    k, m, d = 4, 3, 2
    values = torch.arange(k * 3 * m * d, dtype=torch.float64).reshape(k, 3, m, d)
    out = drop_padding(values.reshape(k, -1), (3, m, d), [torch.tensor([1, 1]), counts])
    expected = torch.cat([values[:, 0, :2], values[:, 2, :3]], 1).reshape(k, -1)
    assert torch.equal(out, expected)
    # no list with that many atoms and that many slots: unchanged
    flat = values.reshape(k, -1)
    assert drop_padding(flat, (3, m, d), [torch.tensor([1, 1, 1])]) is flat
    assert drop_padding(flat, (18,), [counts]) is flat
