"""symmd.models.Reuse: Verlet neighbour lists and validated fixed parts kept
across the calls of one run give the same pairs and results as fresh ones."""

import numpy as np
import pytest
import torch
from helpers import cu_cluster, cual_cell
from toy_models import toy_metatomic_model

from symmd import models
from symmd.models import Reuse, as_structures, evaluate_rotated, neighbor_pairs


def pair_set(pairs):
    return set(zip(pairs.first.tolist(), pairs.second.tolist(), map(tuple, pairs.shifts.tolist())))


@pytest.mark.parametrize("full_list", [True, False])
def test_verlet_pairs_are_the_fresh_pairs_along_a_trajectory(full_list):
    atoms = cual_cell(rattle=0.05)
    rng = np.random.default_rng(0)
    reuse = Reuse(skin=0.5)
    for step in range(40):
        if step == 25:  # the cell changes: the list must follow
            atoms.set_cell(atoms.cell.array * 1.04, scale_atoms=True)
        # some moves stay within skin/2, some jump past it
        atoms.positions += rng.normal(scale=0.3 if step % 10 == 9 else 0.02, size=(len(atoms), 3))
        structures = reuse.structures(atoms)
        got = reuse.pairs(structures, 4.5, full_list)
        fresh = neighbor_pairs(as_structures(atoms), 4.5, full_list)
        assert len(got.first) == int(got.counts[0]) == len(fresh.first)
        assert pair_set(got) == pair_set(fresh)


def test_structures_follow_changes_and_keep_validating():
    reuse = Reuse()
    atoms = cual_cell()
    first = reuse.structures(atoms)
    assert torch.equal(first.positions, as_structures(atoms).positions)
    atoms.positions[0] += 0.1
    moved = reuse.structures(atoms)
    assert torch.equal(moved.positions, as_structures(atoms).positions)
    assert not torch.equal(moved.positions, first.positions)  # a copy, not a view
    atoms.numbers[0] = 13
    assert torch.equal(reuse.structures(atoms).types, as_structures(atoms).types)
    cluster = cu_cluster()  # another structure altogether: pbc, cell, size
    fresh = as_structures(cluster)
    again = reuse.structures(cluster)
    for name in ("positions", "types", "cell", "pbc", "n_atoms"):
        assert torch.equal(getattr(again, name), getattr(fresh, name))
    cluster.positions[3, 1] = np.nan
    with pytest.raises(
        ValueError,
        match=r"^structure 0 has non-finite \(NaN or inf\) positions for atoms \[3\]; check the "
        "integrator or the input file$",
    ):
        reuse.structures(cluster)
    atoms.cell[2] = atoms.cell[0]  # fixed parts changed: validated again
    with pytest.raises(ValueError, match="linearly dependent periodic cell vectors"):
        reuse.structures(atoms)


def test_bad_skin_and_lists_are_refused():
    with pytest.raises(ValueError, match=r"^skin must be a non-negative number \(A\), got -1$"):
        Reuse(skin=-1)
    two = as_structures([cual_cell(), cual_cell(seed=1)])
    with pytest.raises(ValueError, match="^Reuse caches one structure, got 2; evaluate lists"):
        Reuse().pairs(two, 4.5, True)


def test_evaluation_with_reuse_matches_a_fresh_one():
    adapter = models.load(toy_metatomic_model())  # float64, a full neighbour list
    reuse = Reuse()
    atoms = cual_cell()
    rng = np.random.default_rng(1)
    rot = torch.from_numpy(np.linalg.qr(rng.normal(size=(2, 3, 3)))[0])
    props = ("energy", "forces", "stress")
    for _ in range(2):
        atoms.positions += rng.normal(scale=0.05, size=(len(atoms), 3))
        fresh = evaluate_rotated(adapter, atoms, rot, props)
        again = evaluate_rotated(adapter, atoms, rot, props, reuse=reuse)
        for key in props:  # the same pairs, perhaps in another order: round-off
            torch.testing.assert_close(again[key], fresh[key], rtol=1e-12, atol=1e-12)
    # a list of structures is evaluated with fresh lists, reuse or not
    both = evaluate_rotated(adapter, [atoms, cual_cell(seed=2)], rot, props, reuse=reuse)
    torch.testing.assert_close(both["energy"][:, 0], fresh["energy"], rtol=1e-12, atol=0)
