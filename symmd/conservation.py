r"""Momentum, angular momentum, net force and net torque: what direct forces break.

Forces derived from an energy that is invariant under translations have zero
net force :math:`\mathbf F = \sum_i \mathbf F_i`; under rotations too (and
with no periodic direction), zero net torque
:math:`\boldsymbol\tau = \sum_i (\mathbf r_i - \mathbf R) \times \mathbf F_i`
about the centre of mass :math:`\mathbf R`. Newton's equations then conserve
the total momentum :math:`\mathbf P = \sum_i m_i \mathbf v_i` and the angular
momentum :math:`\mathbf L = \sum_i m_i (\mathbf r_i - \mathbf R) \times
(\mathbf v_i - \mathbf V)` about the centre of mass. Direct
(non-conservative) forces learned without constraints have a net force and a
net torque that pump momentum and angular momentum into the system: the
centre of mass drifts, clusters spin up, NVE heats.

:class:`ConservationCheck` measures these at every step from the atoms'
momenta and the forces in use (no model call) and compares them with the
rigid-body motion of thermal size at the reference temperature :math:`T`
(the larger of the kinetic temperature at the first step and now, at least
1 K). With :math:`M` the total mass and :math:`I` the inertia tensor about
the centre of mass (pseudo-inverse :math:`I^+`):

- ``momentum``: :math:`x_P = |\Delta\mathbf P| / \sqrt{M k T}` with
  :math:`\Delta\mathbf P = \mathbf P(t) - \mathbf P(0)`;
- ``angular_momentum`` (no periodic direction):
  :math:`x_L = \sqrt{\Delta\mathbf L^T I^+ \Delta\mathbf L / kT}`.

So :math:`x^2 / 2` is the kinetic energy, in units of :math:`kT`, that the
change would carry as a rigid translation or rotation: :math:`x = 1` is
:math:`kT/2`, one thermal degree of freedom. In NVE both are conserved and
any change is an error: the limit is 1 (the change has put :math:`kT/2`
into rigid motion). With a thermostat (``ensemble`` ``"langevin"``,
``"nvt"`` or unknown) the bath exchanges momentum with the atoms: in
equilibrium each component of :math:`\Delta\mathbf P` has variance at most
:math:`2MkT`, so :math:`x_P^2/2` follows at most a :math:`\chi^2_3`; the
limit 8 (:math:`\chi^2_3 > 32`, probability :math:`5 \times 10^{-7}` per
independent sample, i.e. per bath relaxation time) lets the bath be and
still flags a drift that it cannot hold.

- ``net_force`` (eV/A): :math:`|\mathbf F|`, flagged above
  :math:`F^* = \sqrt{MkT} / t^*` with :math:`t^* = 1` ps: the net force that
  would give the centre of mass :math:`kT/2` of kinetic energy within a
  picosecond;
- ``net_torque`` (eV, no periodic direction): :math:`|\boldsymbol\tau|`,
  flagged for direct forces above :math:`\sqrt{kT / (\hat n^T I^+ \hat n)}
  / t^*` along its direction :math:`\hat n`: the torque that would spin the
  structure up to :math:`kT/2` of rotational energy within a picosecond.

Conservative forces of a translation-invariant energy have a net force at
round-off. An energy that is not exactly rotation invariant (every
unconstrained model) has a net torque, minus the derivative of the energy
with respect to the global orientation: it turns with the structure and its
work is bounded by the orientation dependence of the energy (measured by the
energy's equivariance error), so it cannot spin the structure up without
bound. The net torque of conservative forces is therefore logged but not
flagged; the angular momentum check still holds them to conservation. The
``"project"`` mode of :class:`~symmd.SymmetryCalculator` makes both net
force and net torque exactly zero.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
from ase import units

__all__ = ["METRICS", "ConservationCheck", "reason", "rigid_body"]

#: the flag metrics of this module, in log-column order
METRICS = ("momentum", "angular_momentum", "net_force", "net_torque")
#: :math:`t^*`: the time over which a net force or torque may build up
#: :math:`kT/2` of rigid-body kinetic energy (ASE time units)
RATE_TIME = 1000.0 * units.fs
#: limits on :math:`x_P, x_L` in NVE and with a thermostat (module docstring)
NVE_LIMIT = 1.0
THERMOSTAT_LIMIT = 8.0
#: the smallest reference temperature, K
MIN_TEMPERATURE = 1.0


def rigid_body(positions: np.ndarray, momenta: np.ndarray, masses: np.ndarray) -> dict:
    r"""Total mass ``M`` (amu), centre of mass ``R`` ``[3]`` (A), momentum ``P``
    ``[3]`` and angular momentum about the centre of mass ``L`` ``[3]`` (ASE
    units, amu A / ASE time and amu A^2 / ASE time), and the inertia tensor
    ``I`` ``[3, 3]`` (amu A^2) about the centre of mass, in float64."""
    r = np.asarray(positions, dtype=np.float64)
    p = np.asarray(momenta, dtype=np.float64)
    m = np.asarray(masses, dtype=np.float64)
    mass = float(m.sum())
    com = (m[:, None] * r).sum(0) / mass
    rel = r - com
    total = p.sum(0)
    # L about the centre of mass, in its frame: sum (r - R) x (p - m V)
    angular = np.cross(rel, p - m[:, None] * (total / mass)).sum(0)
    inertia = (m * (rel**2).sum(1)).sum() * np.eye(3) - np.einsum("i,ia,ib->ab", m, rel, rel)
    return {"M": mass, "R": com, "P": total, "L": angular, "I": inertia}


def _inertia_norm(vector: np.ndarray, inertia_pinv: np.ndarray) -> float:
    r""":math:`\sqrt{v^T I^+ v}` (0 for a vector in the null space of ``I``)."""
    return math.sqrt(max(float(vector @ inertia_pinv @ vector), 0.0))


class ConservationCheck:
    """The per-step checks of the module docstring, for a :class:`symmd.Monitor`.

    ``thresholds``: the monitor's dict; the keys ``momentum``,
    ``angular_momentum`` (thermal units), ``net_force`` (eV/A) and
    ``net_torque`` (eV) replace the default limits. ``ensemble``: ``"nve"``
    (momentum and angular momentum conserved) or anything else (a thermostat
    may exchange them with its bath).
    """

    def __init__(self, thresholds: dict, ensemble: Optional[str]):
        self.thresholds = thresholds
        self.limit = NVE_LIMIT if ensemble == "nve" else THERMOSTAT_LIMIT
        self._start: Optional[dict] = None

    def reset(self) -> None:
        """Take the next observed step as the new start."""
        self._start = None

    def observe(self, atoms, forces: np.ndarray, direct: bool = True) -> tuple[dict, list]:
        """The log fields :data:`METRICS` of ``atoms`` (positions, momenta,
        masses) with the ``forces [N, 3]`` (eV/A) in use, and the flags
        ``(metric, value, limit)`` of the checks that fail. Angular momentum
        and net torque are left out (``None``) for a structure with a periodic
        direction; the net torque is flagged only for ``direct`` forces (not
        the gradient of an energy). The first call sets the start, and so
        does the first after the atoms changed or after calls with all
        momenta zero (e.g. a relaxation before the MD)."""
        masses = atoms.get_masses()
        momenta = atoms.get_momenta()
        state = rigid_body(atoms.positions, momenta, masses)
        ekin = float((momenta**2 / masses[:, None]).sum()) / 2
        n = len(atoms)
        temperature = 2 * ekin / (3 * n * units.kB) if n else 0.0
        numbers = atoms.numbers.tobytes()
        moving = bool(momenta.any())
        previous = self._start
        # a new start: the first step, other atoms, or the first step with
        # momenta after steps at rest (a relaxation before MD)
        if (
            previous is None
            or previous["numbers"] != numbers
            or (moving and not previous["moving"])
        ):
            previous = dict(state, temperature=temperature, numbers=numbers, moving=moving)
            self._start = previous
        start: dict = previous
        kt = units.kB * max(start["temperature"], temperature, MIN_TEMPERATURE)
        forces = np.asarray(forces, dtype=np.float64)
        net = forces.sum(0)
        row: dict = {
            "momentum": float(np.linalg.norm(state["P"] - start["P"])) / math.sqrt(state["M"] * kt),
            "net_force": float(np.linalg.norm(net)),
            "angular_momentum": None,
            "net_torque": None,
        }
        limits = {
            "momentum": self.thresholds.get("momentum", self.limit),
            "net_force": self.thresholds.get("net_force", math.sqrt(state["M"] * kt) / RATE_TIME),
        }
        if not atoms.pbc.any():
            pinv = np.linalg.pinv(state["I"], rcond=1e-10, hermitian=True)
            torque = np.cross(atoms.positions - state["R"], forces).sum(0)
            size = float(np.linalg.norm(torque))
            row["angular_momentum"] = _inertia_norm(state["L"] - start["L"], pinv) / math.sqrt(kt)
            row["net_torque"] = size
            limits["angular_momentum"] = self.thresholds.get("angular_momentum", self.limit)
            if direct:
                along = _inertia_norm(torque / size, pinv) if size > 0 else 0.0
                limits["net_torque"] = self.thresholds.get(
                    "net_torque", math.sqrt(kt) / along / RATE_TIME if along > 0 else math.inf
                )
        flags = [
            (name, row[name], limits[name])
            for name in METRICS
            if name in limits and row[name] > limits[name]
        ]
        return row, flags


def reason(name: str, value: float, limit: float) -> str:
    """One line saying what a flag of :class:`ConservationCheck` means."""
    fix = "symmetrize='project' removes it"
    if name == "momentum":
        return (
            f"momentum changed by {value:.3g} thermal units sqrt(M kT) since the start "
            f"(limit {limit:.3g}): a net force drives the centre of mass; {fix}"
        )
    if name == "angular_momentum":
        return (
            f"angular_momentum changed by {value:.3g} thermal units sqrt(I kT) since the "
            f"start (limit {limit:.3g}): a net torque spins the structure up; {fix}"
        )
    if name == "net_force":
        return (
            f"net_force = {value:.4g} eV/A: the forces do not sum to zero (limit {limit:.4g} "
            f"eV/A, which gives the centre of mass kT/2 within 1 ps); {fix}"
        )
    if name == "net_torque":
        return (
            f"net_torque = {value:.4g} eV: the forces exert a torque (limit {limit:.4g} eV, "
            f"which spins the structure up to kT/2 within 1 ps); {fix}"
        )
    raise ValueError(f"{name!r} is not one of the conservation metrics {list(METRICS)}")
