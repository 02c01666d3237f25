r"""Projection of forces, stress and per-atom energies onto a crystal's space group.

A space-group operation :math:`g = (W, t)` maps fractional coordinates
:math:`x \to W x + t` (spglib's convention, column vectors) and atom :math:`i`
onto atom :math:`g(i)`, :math:`x_{g(i)} \equiv W x_i + t \pmod 1`. With the
ASE cell :math:`C` (lattice vectors as rows, :math:`r = C^T x`), its Cartesian
rotation is :math:`R_g = C^T W C^{-T}`. Outputs of a model that respects the
group obey :math:`F_{g(i)} = R_g F_i`, :math:`\sigma = R_g \sigma R_g^T` and
:math:`e_{g(i)} = e_i`; the projections (the group average, an orthogonal
projector onto those subspaces) are

.. math::
   F_i \to \frac{1}{|G|} \sum_g R_g^T F_{g(i)}, \qquad
   \sigma \to \frac{1}{|G|} \sum_g R_g^T \sigma R_g, \qquad
   e_i \to \frac{1}{|G|} \sum_g e_{g(i)}.

The energy, invariant under the group, is unchanged. The projection needs no
model evaluation; the operations (spglib) and the atom permutation of each are
found once per structure and re-used while the structure keeps them.
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

__all__ = ["SpaceGroupProjector"]


def _wrap(frac: np.ndarray) -> np.ndarray:
    return frac - np.round(frac)


def _nearest(frac: np.ndarray, image: np.ndarray) -> np.ndarray:
    """``[G, N]`` index of the atom nearest (periodically, in fractional
    coordinates) to every image ``image[g, i]``; a k-d tree, O(G N log N)."""
    from scipy.spatial import cKDTree

    def unit(x: np.ndarray) -> np.ndarray:
        x = x - np.floor(x)
        return np.where(x >= 1.0, 0.0, x)

    tree = cKDTree(unit(frac), boxsize=1.0)
    _, index = tree.query(unit(image.reshape(-1, 3)))
    return np.asarray(index, dtype=np.int64).reshape(image.shape[:2])


class SpaceGroupProjector:
    """Finds a crystal's space group once and projects outputs onto it.

    Parameters
    ----------
    symprec: spglib's distance tolerance, A (default ``1e-5``). The operations
        found for a structure are re-used while every atom stays within
        ``symprec`` of its image under every operation (and the lattice keeps
        its metric to the same tolerance); otherwise they are searched again.

    Notes
    -----
    Only fully periodic structures have a space group: others raise
    ``ValueError`` (use ``symmetrize="average"`` for molecules and clusters).
    When the group has only the identity (or only the identity and lattice
    translations of a supercell), a ``UserWarning`` names the structure and
    ``symprec`` and the projection changes nothing but the per-translation
    averages: a warning rather than an error, so that an MD run that loses its
    symmetry goes on.

    Attributes
    ----------
    rotations: ``[G, 3, 3]`` float64 fractional rotations :math:`W` (int-valued).
    translations: ``[G, 3]`` float64 fractional translations :math:`t`.
    permutations: ``[G, N]`` int64, ``permutations[g, i] = g(i)``.
    n_searches: how many times spglib was called.
    """

    def __init__(self, symprec: float = 1e-5):
        if isinstance(symprec, bool) or not isinstance(symprec, (int, float)) or symprec <= 0:
            raise ValueError(f"symprec must be a positive float (A), got {symprec!r}")
        self.symprec = float(symprec)
        self.rotations: Optional[np.ndarray] = None
        self.translations: Optional[np.ndarray] = None
        self.permutations: Optional[np.ndarray] = None
        self._numbers: Optional[np.ndarray] = None
        self._tolerance = self.symprec
        self.n_searches = 0

    # -- finding the group ----------------------------------------------
    def _check_periodic(self, atoms) -> None:
        if not atoms.pbc.all() or atoms.cell.rank < 3:
            raise ValueError(
                "space_group=True needs a fully periodic structure with a 3D cell (spglib "
                f"finds space groups of crystals); this one has pbc={atoms.pbc.tolist()}; "
                "use symmetrize='average' for molecules and clusters"
            )

    def _still_valid(self, atoms) -> bool:
        if self.rotations is None or self._numbers is None:
            return False
        if len(atoms) != len(self._numbers) or not np.array_equal(atoms.numbers, self._numbers):
            return False
        return self._max_deviation(atoms) <= self._tolerance

    def _max_deviation(self, atoms) -> float:
        """Largest distance (A) between an image ``W x_i + t`` and atom ``g(i)``,
        and largest change of a lattice vector length under ``W``."""
        assert self.rotations is not None and self.translations is not None
        assert self.permutations is not None
        cell = atoms.cell.array
        frac = atoms.get_scaled_positions(wrap=False)
        image = np.einsum("gab,nb->gna", self.rotations, frac) + self.translations[:, None]
        diff = _wrap(image - frac[self.permutations]) @ cell
        metric = cell @ cell.T
        metric_err = np.einsum("gba,bc,gcd->gad", self.rotations, metric, self.rotations) - metric
        scale = max(float(np.linalg.norm(cell, axis=1).max()), 1.0)
        return max(
            float(np.linalg.norm(diff, axis=-1).max()), float(np.abs(metric_err).max()) / scale
        )

    def find(self, atoms) -> None:
        """Search the space group of ``atoms`` with spglib and the permutations."""
        try:
            import spglib
        except ImportError as error:
            raise ImportError(
                "space_group=True needs spglib: pip install 'symmd[symmetry]' (or pip install spglib)"
            ) from error

        self._check_periodic(atoms)
        cell = atoms.cell.array
        frac = atoms.get_scaled_positions(wrap=True)
        spglib.error.OLD_ERROR_HANDLING = False  # errors raise (no deprecation warning)
        self.n_searches += 1
        try:
            sym = spglib.get_symmetry(
                (cell, frac, atoms.numbers.astype(np.int32)), symprec=self.symprec
            )
        except spglib.error.SpglibError as error:
            sym, message = None, str(error)
        else:
            message = "no dataset"
        if sym is None:
            raise ValueError(
                f"spglib found no symmetry for {atoms.get_chemical_formula()} with "
                f"symprec={self.symprec} ({message}); check the cell and positions"
            )
        rot = np.asarray(sym["rotations"], dtype=np.float64)
        trans = np.asarray(sym["translations"], dtype=np.float64)
        image = np.einsum("gab,nb->gna", rot, frac) + trans[:, None]  # [G, N, 3]
        perms = _nearest(frac, image)
        self.rotations, self.translations, self.permutations = rot, trans, perms
        bijective = (np.sort(perms, axis=1) == np.arange(len(atoms))).all()
        if not bijective or not (atoms.numbers[perms] == atoms.numbers).all():
            raise ValueError(
                f"the operations spglib found for {atoms.get_chemical_formula()} with "
                f"symprec={self.symprec} do not permute its atoms onto atoms of the same "
                "element; lower symprec"
            )
        # re-used while no image drifts further than symprec (or than spglib's own match)
        self._tolerance = max(self.symprec, 1.01 * self._max_deviation(atoms))
        self._numbers = atoms.numbers.copy()
        if np.array_equal(rot, np.broadcast_to(np.eye(3), rot.shape)):
            warnings.warn(
                f"the space group of {atoms.get_chemical_formula()} found by spglib with "
                f"symprec={self.symprec} has no rotation but the identity; the projection "
                "does not constrain its forces and stress (symmetrize the structure, e.g. "
                "ase.spacegroup.symmetrize.refine_symmetry, or raise symprec)",
                UserWarning,
                stacklevel=3,
            )

    def update(self, atoms) -> None:
        """Re-use the cached group when ``atoms`` still has it, else search again."""
        self._check_periodic(atoms)
        if not self._still_valid(atoms):
            self.find(atoms)

    def cartesian_rotations(self, atoms) -> np.ndarray:
        """``[G, 3, 3]`` orthogonal :math:`R_g = C^T W C^{-T}` for the cell of ``atoms``
        (made exactly orthogonal by a polar decomposition)."""
        assert self.rotations is not None
        cell = atoms.cell.array
        rot = np.einsum("ba,gbc,cd->gad", cell, self.rotations, np.linalg.inv(cell).T)
        u, _, vt = np.linalg.svd(rot)
        return u @ vt

    # -- projecting -----------------------------------------------------
    def project(self, atoms, results: dict) -> dict:
        """Project the ``"forces"`` ``[N, 3]`` (eV/A), ``"stress"`` ``[3, 3]``
        (eV/A^3) and ``"energies"`` ``[N]`` (eV) found in ``results`` onto the
        space group of ``atoms``; returns a new dict with those keys (float64)
        and leaves ``results`` unchanged. Other keys (the energy) are not copied.
        """
        self.update(atoms)
        assert self.permutations is not None
        perms = self.permutations
        n_ops = len(perms)
        rot = self.cartesian_rotations(atoms)
        out = {}
        if "forces" in results:
            forces = np.asarray(results["forces"], dtype=np.float64)
            # row vectors: (R_g^T F_{g(i)})^T = F_{g(i)} R_g
            out["forces"] = np.einsum("gnj,gjk->nk", forces[perms], rot) / n_ops
        if "stress" in results:
            stress = np.asarray(results["stress"], dtype=np.float64)
            out["stress"] = np.einsum("gji,jk,gkl->il", rot, stress, rot) / n_ops
        if "energies" in results:
            energies = np.asarray(results["energies"], dtype=np.float64)
            out["energies"] = energies[perms].mean(0)
        return out
