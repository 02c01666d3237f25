r"""The ASE calculator: raw, projected or O(3)-averaged predictions.

For a model :math:`f` and a quadrature :math:`\{g_k, w_k\}` (matrices
:math:`R_k`), the ``"average"`` mode returns the twirl of every output,

.. math::
   E = \sum_k w_k E(g_k x), \qquad
   F = \sum_k w_k F(g_k x) R_k, \qquad
   \sigma = \sum_k w_k R_k^T \sigma(g_k x) R_k,

which is exactly O(3)-equivariant when the rule is exact for the model's
angular content. For a conservative model the averaged forces are minus the
gradient of the averaged energy (the average is linear), and the spread of the
back-rotated outputs gives the equivariance errors :math:`A` at no extra cost.
``"project"`` applies :mod:`symmd.projection` to the raw outputs.
``"adaptive"`` is raw until the monitor flags a step, then averaged.
``quadrature="auto"`` picks, at the first averaged call, the smallest rule
whose twirl residual, predicted from the spectrum of the model's responses
above the rule's degree, is within ``tolerance``
(:func:`symmd.recommend.recommend_quadrature`).

Units and signs follow ASE: eV, eV/A, eV/A^3 (stress in Voigt order
``xx, yy, zz, yz, xz, xy``, positive when the system pulls inwards).
"""

from __future__ import annotations

import logging
from typing import Optional, Union

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from . import metrics, o3
from .models import evaluate_rotated, load
from .projection import project_forces, symmetrize_stress
from .recommend import check_tolerance, recommend_quadrature
from .spacegroup import SpaceGroupProjector

__all__ = ["SymmetryCalculator", "MODES"]

_LOG = logging.getLogger("symmd")

MODES = ("none", "project", "average", "adaptive")
_KINDS = {"energy": "scalar", "energies": "scalar", "forces": "vector", "stress": "rank2"}


class SymmetryCalculator(Calculator):
    """Wrap a model as an ASE calculator with optional O(3) symmetrization.

    Parameters
    ----------
    model: anything :func:`symmd.models.load` accepts (a metatomic ``.pt``
        path or model, an ASE calculator, a torch callable).
    symmetrize: ``"none"``, ``"project"``, ``"average"`` or ``"adaptive"``.
    quadrature: a :class:`symmd.o3.Quadrature`, an int degree
        (:func:`symmd.o3.quadrature`), or ``"auto"``: the smallest rule whose
        predicted twirl residual meets ``tolerance``, chosen on the structure
        of the first averaged call (the choice and its predictions are kept
        in ``calc.recommendation``). Used by ``"average"``/``"adaptive"``.
    tolerance: for ``quadrature="auto"``: the largest RMS force residual
        against the exact twirl, eV/A (default 1e-3), or a dict over
        ``"forces"`` (eV/A), ``"energy"`` (eV), ``"stress"`` (eV/A^3).
    reorient: draw a new random global orientation of the quadrature at every
        call (seeded by ``seed``), turning its residual bias into noise.
    monitor: a :class:`symmd.Monitor`, driven by this calculator.
    batch_size: the most rotated copies per model call (``None``: all).
    device, dtype, non_conservative: passed to :func:`symmd.models.load`.
    seed: seeds ``reorient`` (and the monitor, if it has no seed of its own).
    mirror_to_atoms: also store the diagnostics in ``atoms.info`` and
        ``atoms.arrays`` so that they survive in extxyz trajectories.
    space_group: after the mode's own result, project forces, stress and
        per-atom energies onto the structure's space group (found with spglib,
        re-used while the structure keeps it; zero extra model calls; the
        energy is unchanged): :class:`symmd.spacegroup.SpaceGroupProjector`.
        Fully periodic structures only (``ValueError`` otherwise); a
        ``UserWarning`` when the group has only the identity rotation.
    symprec: spglib's tolerance for ``space_group``, A (default 1e-5).

    ``results`` hold ``energy``, ``free_energy``, ``forces``, ``stress`` (fully
    periodic structures only), ``energies`` when asked for, and, whenever they
    were computed for the call, ``equivariance_error_energy`` (eV),
    ``equivariance_error_forces`` (``[N]``, eV/A), ``equivariance_error_stress``
    (eV/A^3).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(
        self,
        model,
        *,
        symmetrize: str = "none",
        quadrature: Union[o3.Quadrature, int, str] = 3,
        tolerance: Union[float, dict] = 1e-3,
        reorient: bool = False,
        monitor=None,
        batch_size: Optional[int] = None,
        device=None,
        dtype: Optional[torch.dtype] = None,
        non_conservative: bool = False,
        seed: Optional[int] = None,
        mirror_to_atoms: bool = False,
        space_group: bool = False,
        symprec: float = 1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if symmetrize not in MODES:
            raise ValueError(f"symmetrize must be one of {list(MODES)}, got {symmetrize!r}")
        self.recommendation = None
        self.tolerance = tolerance
        if isinstance(quadrature, o3.Quadrature):
            self.quadrature = quadrature
        elif isinstance(quadrature, (int, np.integer)) and not isinstance(quadrature, bool):
            self.quadrature = o3.quadrature(int(quadrature))
        elif quadrature == "auto":
            self.quadrature = None  # chosen at the first averaged call
            check_tolerance(tolerance)
        else:
            raise TypeError(
                f"quadrature must be a symmd.o3.Quadrature, an int degree or 'auto', got {quadrature!r}"
            )
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        self.model = load(model, device=device, dtype=dtype, non_conservative=non_conservative)
        self.symmetrize = symmetrize
        self.mode = "none" if symmetrize == "adaptive" else symmetrize
        self.reorient = bool(reorient)
        self.batch_size = batch_size
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.mirror_to_atoms = bool(mirror_to_atoms)
        self.space_group = SpaceGroupProjector(symprec) if space_group else None
        self.n_calls = 0
        self.switches: list[dict] = []
        if monitor is None and symmetrize == "adaptive":
            from .monitor import Monitor

            monitor = Monitor(action="symmetrize", seed=seed)
        self.monitor = monitor
        if monitor is not None:
            monitor.attach(self)

    # -- evaluation ------------------------------------------------------
    def evaluate(self, atoms, rotations, properties) -> dict[str, torch.Tensor]:
        """Responses of the wrapped model for rotated copies of ``atoms``
        (see :func:`symmd.models.evaluate_rotated`)."""
        return evaluate_rotated(self.model, atoms, rotations, properties, self.batch_size)

    def _properties(self, atoms, properties) -> tuple:
        periodic = bool(atoms.pbc.all())
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError(
                "stress is only defined for fully periodic structures; this one has "
                f"pbc={atoms.pbc.tolist()}"
            )
        props = ["energy", "forces"] + (["stress"] if periodic else [])
        return tuple(props + (["energies"] if "energies" in properties else []))

    def _raw(self, atoms, props) -> dict[str, np.ndarray]:
        out = self.evaluate(atoms, torch.eye(3, dtype=torch.float64), props)
        return {key: value[0].cpu().numpy() for key, value in out.items()}

    def choose_quadrature(self, atoms) -> o3.Quadrature:
        """Run :func:`~symmd.recommend.recommend_quadrature` on ``atoms`` and
        use its rule from now on (what ``quadrature="auto"`` does once)."""
        tolerance = self.tolerance
        if isinstance(tolerance, dict) and not atoms.pbc.all():  # no stress to judge
            tolerance = {k: v for k, v in tolerance.items() if k != "stress"}
        rec = recommend_quadrature(
            self.model, atoms, tolerance, reorient=self.reorient, batch_size=self.batch_size
        )
        self.recommendation, self.quadrature = rec, rec.quadrature
        _LOG.info("symmd: quadrature='auto' chose %s", rec)
        return rec.quadrature

    def _average(self, atoms, props) -> dict[str, np.ndarray]:
        if self.quadrature is None:
            self.choose_quadrature(atoms)
        q = self.quadrature
        if self.reorient:
            from scipy.spatial.transform import Rotation

            q = q.reoriented(torch.from_numpy(Rotation.random(random_state=self.rng).as_matrix()))
        out = self.evaluate(atoms, q, props)
        results, errors = {}, {}
        for key, value in out.items():
            results[key] = metrics.average(value, q, _KINDS[key]).cpu().numpy()
            if key != "energies":
                errors[f"equivariance_error_{key}"] = (
                    metrics.equivariance_error(value, q, _KINDS[key]).cpu().numpy()
                )
        results.update({k: (float(v) if v.ndim == 0 else v) for k, v in errors.items()})
        return results

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        """Fill ``self.results`` for ``atoms`` in the current mode."""
        super().calculate(atoms, properties, system_changes)
        props = self._properties(self.atoms, properties)
        self.n_calls += 1
        mode = self.mode
        self._fill(mode, props)
        if self.monitor is not None:
            self.monitor.check(self, self.atoms, props)
            if self.mode != mode:  # the monitor switched modes: redo this step
                diagnostics = {
                    k: v for k, v in self.results.items() if k.startswith("equivariance_error")
                }
                self._fill(self.mode, props)
                for key, value in diagnostics.items():
                    self.results.setdefault(key, value)
        if self.mirror_to_atoms and atoms is not None:
            self._mirror(atoms)

    def _fill(self, mode: str, props) -> None:
        atoms = self.atoms
        results = self._average(atoms, props) if mode == "average" else self._raw(atoms, props)
        if mode == "project":
            results["forces"] = project_forces(
                results["forces"], atoms.positions, torque=not atoms.pbc.any()
            )
        if self.space_group is not None:
            results.update(self.space_group.project(atoms, results))
        energy = float(results.pop("energy"))
        self.results = {"energy": energy, "free_energy": energy, "forces": results.pop("forces")}
        if "stress" in results:
            self.results["stress"] = full_3x3_to_voigt_6_stress(
                symmetrize_stress(results.pop("stress"))
            )
        self.results.update(results)

    # -- adaptive switching ---------------------------------------------
    def set_mode(self, mode: str, reason: str = "") -> None:
        """Switch between ``"none"``/``"project"`` and ``"average"`` from the next
        evaluation on (the monitor calls this); every switch is recorded in
        ``self.switches`` (and in the monitor's log)."""
        if mode not in ("none", "project", "average"):
            raise ValueError(f"mode must be 'none', 'project' or 'average', got {mode!r}")
        if mode != self.mode:
            self.switches.append(
                {"call": self.n_calls, "from": self.mode, "to": mode, "reason": reason}
            )
            self.mode = mode

    def _mirror(self, atoms) -> None:
        for key, value in self.results.items():
            if not key.startswith("equivariance_error"):
                continue
            if np.ndim(value) == 1 and len(value) == len(atoms):
                atoms.arrays[key] = np.asarray(value, dtype=np.float64)
            else:
                atoms.info[key] = float(value)
