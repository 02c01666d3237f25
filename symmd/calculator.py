r"""The ASE calculator: raw, projected or O(3)-averaged predictions.

For a model :math:`f` and a quadrature :math:`\{g_k, w_k\}` (matrices
:math:`R_k`), the ``"average"`` mode returns the twirl of every output,

.. math::
   E = \sum_k w_k E(g_k x), \qquad
   F = \sum_k w_k F(g_k x) R_k, \qquad
   \sigma = \sum_k w_k R_k^T \sigma(g_k x) R_k,

which is exactly O(3)-equivariant when the rule is exact for the model's
angular content. For a conservative model the averaged forces are minus the
gradient of the averaged energy (the average is linear). The spread of the
back-rotated outputs over the same copies gives the equivariance errors
:math:`A` at no extra cost; since :math:`A^2` is a second moment, a rule of
degree :math:`L` gives it exactly only for responses band-limited to
:math:`\lfloor L/2 \rfloor` (``equivariance_error_exact_lambda`` in the
results); a :class:`~symmd.Monitor` estimates it without bias in every mode.
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
from typing import Any, Optional, Union

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from . import metrics, o3
from ._kwargs import check_keywords
from .errors import InstabilityError
from .models import Responses, Reuse, evaluate_rotated, load
from .monitor import Draws, Monitor, Observation
from .projection import project_forces, symmetrize_stress
from .recommend import check_tolerance, recommend_quadrature
from .spacegroup import SpaceGroupProjector

__all__ = ["MODES", "SymmetryCalculator"]

_LOG = logging.getLogger("symmd")

MODES = ("none", "project", "average", "adaptive")
#: keywords of ase's Calculator that SymmetryCalculator passes on
_ASE_KEYWORDS = ("restart", "ignore_bad_restart_file", "label", "atoms", "directory")
#: per-call cost assumed in the refusal message of oversized rules (s per copy per atom)
_SECONDS_PER_COPY_ATOM = 2e-4
#: the raw evaluation's only "rotation"
_IDENTITY = o3.quadrature(0, inversion=False)


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
    monitor: a :class:`symmd.Monitor`, driven by this calculator. With
        ``symmetrize="adaptive"`` and no monitor, ``Monitor(seed=seed)`` is
        made. In adaptive mode the first flag switches to averaging whatever
        the monitor's action; the action (warn, raise, callable) still runs
        on flags that persist while averaging.
    batch_size: the most rotated copies per model call (``None``: chosen by
        :func:`symmd.models.chunk_plan`).
    max_copies: refuse rules with more rotated copies than this (default
        5000, about an hour per step for a few hundred atoms on a CPU);
        ``None`` allows any size.
    device, dtype, non_conservative: passed to :func:`symmd.models.load`.
        With ``non_conservative=True`` forces and stress are the model's
        direct outputs in every mode (forward passes only, no autograd
        graph); a periodic cell gets a stress only when the model has
        ``non_conservative_stress``.
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
    periodic structures only, Voigt), ``energies`` when asked for, and
    whenever they were computed for the call: ``equivariance_error_energy``
    (eV), ``equivariance_error_forces`` (``[N]``, eV/A),
    ``equivariance_error_stress`` (eV/A^3) and
    ``equivariance_error_exact_lambda`` (averaged calls: the errors are exact
    for responses band-limited to this order), and, for periodic
    structures, ``stress_antisymmetric`` (eV/A^3, Frobenius norm of
    :math:`(S - S^T)/2` before the Voigt form drops it; zero for an
    invariant model). For unchanged positions, later requests (e.g.
    ``energies``) never change the values already returned.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(
        self,
        model: Any,
        *,
        symmetrize: str = "none",
        quadrature: Union[o3.Quadrature, int, str] = 3,
        tolerance: Union[float, dict] = 1e-3,
        reorient: bool = False,
        monitor: Optional[Monitor] = None,
        batch_size: Optional[int] = None,
        max_copies: Optional[int] = 5000,
        device: Any = None,
        dtype: Optional[torch.dtype] = None,
        non_conservative: bool = False,
        seed: Optional[int] = None,
        mirror_to_atoms: bool = False,
        space_group: bool = False,
        symprec: float = 1e-5,
        **kwargs: Any,
    ):
        check_keywords(kwargs, SymmetryCalculator.__init__, "SymmetryCalculator", _ASE_KEYWORDS)
        super().__init__(**kwargs)
        if symmetrize not in MODES:
            raise ValueError(f"symmetrize must be one of {list(MODES)}, got {symmetrize!r}")
        if max_copies is not None and (
            isinstance(max_copies, bool) or not isinstance(max_copies, int) or max_copies < 1
        ):
            raise ValueError(f"max_copies must be a positive int or None, got {max_copies!r}")
        self.max_copies = max_copies
        self.recommendation: Any = None
        self.tolerance = tolerance
        self.quadrature: Optional[o3.Quadrature]
        if isinstance(quadrature, o3.Quadrature):
            self.quadrature = self._check_size(quadrature)
        elif isinstance(quadrature, (int, np.integer)) and not isinstance(quadrature, bool):
            self.quadrature = self._check_size(o3.quadrature(int(quadrature)))
        elif quadrature == "auto":
            self.quadrature = None  # chosen at the first averaged call
            check_tolerance(tolerance)
        else:
            raise TypeError(
                f"quadrature must be a symmd.o3.Quadrature, an int degree or 'auto', got {quadrature!r}"
            )
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
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
        self.reuse = Reuse()  # Verlet neighbour lists and the fixed parts, across calls
        if monitor is None and symmetrize == "adaptive":
            monitor = Monitor(seed=seed)
        if monitor is not None and not isinstance(monitor, Monitor):
            raise TypeError(
                f"monitor must be a symmd.Monitor or None, got {type(monitor).__name__}"
            )
        self.monitor = monitor
        if monitor is not None:
            monitor.attach(seed)

    def _check_size(self, q: o3.Quadrature, n_atoms: Optional[int] = None) -> o3.Quadrature:
        if self.max_copies is not None and len(q) > self.max_copies:
            atoms = n_atoms or 100
            cost = len(q) * atoms * _SECONDS_PER_COPY_ATOM
            raise ValueError(
                f"the quadrature {q.name!r} has {len(q)} rotated copies, more than "
                f"max_copies={self.max_copies} (roughly {cost:.0f} s per step for {atoms} atoms "
                "on a CPU); lower the degree, or pass max_copies=None to allow it"
            )
        return q

    # -- evaluation ------------------------------------------------------
    def evaluate(self, atoms, rotations, properties) -> Responses:
        """Responses of the wrapped model for rotated copies of ``atoms``
        (see :func:`symmd.models.evaluate_rotated`; neighbour lists are
        reused across calls, :class:`symmd.models.Reuse`)."""
        return evaluate_rotated(
            self.model, atoms, rotations, properties, self.batch_size, reuse=self.reuse
        )

    def _evaluate_with(self, atoms, q: o3.Quadrature, props, draws: Optional[Draws]) -> Responses:
        """Evaluate the rotations of ``q`` and, when a check asks for them, the
        monitor's draws in the same batch (one model call per chunk of
        :func:`symmd.models.chunk_plan`, which splits them only where the
        memory bound demands); the draws' responses go to
        ``draws.responses``, those of ``q`` are returned."""
        if draws is None:
            return self.evaluate(atoms, q, props)
        n = len(q)
        both = torch.cat([q.rotations, draws.rotations.rotations.to(q.rotations)])
        out = self.evaluate(atoms, both, props)
        draws.responses = out.take(slice(n, None))
        return out.take(slice(0, n))

    def _properties(self, atoms, properties) -> tuple:
        periodic = bool(atoms.pbc.all())
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError(
                "stress is only defined for fully periodic structures; this one has "
                f"pbc={atoms.pbc.tolist()}"
            )
        if periodic and not self.model.provides("stress"):  # direct forces, no direct stress
            if "stress" in properties:
                raise PropertyNotImplementedError(
                    "stress with non_conservative=True needs the model's "
                    "'non_conservative_stress' output, which this model does not have"
                )
            periodic = False
        props = ["energy", "forces"] + (["stress"] if periodic else [])
        return tuple(props + (["energies"] if "energies" in properties else []))

    def _raw(self, atoms, props, draws: Optional[Draws] = None) -> dict:
        out = self._evaluate_with(atoms, _IDENTITY, props, draws)
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
        self.recommendation, self.quadrature = rec, self._check_size(rec.quadrature, len(atoms))
        _LOG.info("symmd: quadrature='auto' chose %s", rec)
        return rec.quadrature

    def _average(self, atoms, props, draws: Optional[Draws] = None) -> dict:
        q = self.quadrature if self.quadrature is not None else self.choose_quadrature(atoms)
        if self.reorient:
            from scipy.spatial.transform import Rotation

            q = q.reoriented(torch.from_numpy(Rotation.random(random_state=self.rng).as_matrix()))
        out = self._evaluate_with(atoms, q, props, draws)
        results: dict = {}
        for key, value in out.items():
            twirl, error = metrics.twirl_and_error(value, q, out.kinds[key])
            results[key] = twirl.cpu().numpy()
            if key != "energies":
                err = error.cpu().numpy()
                results[f"equivariance_error_{key}"] = float(err) if err.ndim == 0 else err
        if q.degree is not None:
            results["equivariance_error_exact_lambda"] = q.degree // 2
        return results

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        """Fill ``self.results`` for ``atoms`` in the current mode."""
        previous = dict(self.results) if not system_changes else {}
        super().calculate(atoms, properties, system_changes)
        props = self._properties(self.atoms, properties)
        draws = None
        if system_changes:  # a new state: one more force evaluation (MD step)
            self.n_calls += 1
            if self.monitor is not None:  # does this step's check want rotated draws?
                draws = self.monitor.draws(self)
        self._fill(self.mode, props, draws)
        if self.monitor is not None and system_changes:
            self._apply(self.monitor.check(self, self.atoms, props, draws), props)
        # unchanged positions: keep what was already returned (one value per state)
        self.results.update({k: v for k, v in previous.items() if k in self.results})
        if self.mirror_to_atoms and atoms is not None:
            self._mirror(atoms)

    def _apply(self, obs: Observation, props) -> None:
        """Act on what the monitor saw: its estimates go into the results;
        a requested switch changes the mode (and this step is redone in it);
        a requested stop raises."""
        self.results.update(obs.errors)
        if obs.request == "stop":
            name, value, limit = obs.flags[0]
            raise InstabilityError(
                obs.message,
                step=obs.step,
                metric=name,
                value=value,
                threshold=limit,
                last_good=obs.last_good,
            )
        if obs.request in ("average", "none") and obs.request != self.mode:
            reason = obs.message or "calm: relative force error below half the threshold"
            old = self.mode
            self.set_mode(obs.request, reason)
            assert self.monitor is not None
            self.monitor.record_switch(obs.step, old, obs.request)
            self._fill(self.mode, props)
            for key, value in obs.errors.items():
                self.results.setdefault(key, value)

    def _fill(self, mode: str, props, draws: Optional[Draws] = None) -> None:
        """Evaluate the step in ``mode`` (with the monitor's ``draws`` in the
        same batch when given) and set ``self.results``."""
        atoms = self.atoms
        assert atoms is not None
        if mode == "average":
            results = self._average(atoms, props, draws)
        else:
            results = self._raw(atoms, props, draws)
        if mode == "project":
            results["forces"] = project_forces(
                results["forces"], atoms.positions, torque=not atoms.pbc.any()
            )
        if "stress" in results:  # a diagnostic of the mode's own result
            antisymmetric = (results["stress"] - results["stress"].T) / 2
            results["stress_antisymmetric"] = float(np.linalg.norm(antisymmetric))
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
        evaluation on; every switch is recorded in ``self.switches``."""
        if mode not in ("none", "project", "average"):
            raise ValueError(f"mode must be 'none', 'project' or 'average', got {mode!r}")
        if mode == "average" and self.quadrature is not None:
            self._check_size(self.quadrature)
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
