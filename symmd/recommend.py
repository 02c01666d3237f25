r"""The minimum-bias quadrature: each rule's twirl residual predicted from the
spectrum above its degree, and the smallest rule under a tolerance.

The back-transformed response :math:`z(g) = \rho(g)^{-1} u(g)` of a structure
expands on O(3) as

.. math:: z(g) = \sum_\beta \sum_{mn} c^\beta_{mn} D^\beta_{mn}(g), \qquad
   c^\beta = d_\beta \int D^\beta(g)\, z(g)\, dg,

and the twirl is :math:`\Pi = c^{(0,+1)}`. A rule :math:`Q = \{g_k, w_k\}`
returns :math:`\sum_k w_k z(g_k) = \sum_\beta \langle S^\beta_Q, c^\beta\rangle`
with :math:`S^\beta_Q = \sum_k w_k D^\beta(g_k)`, which vanishes for every
:math:`\lambda_\beta \le L` when :math:`Q` has degree :math:`L`. Its residual

.. math:: r_Q = \sum_{\beta \ne (0,+1)} \langle S^\beta_Q, c^\beta \rangle

is therefore made only of the spectral content of :math:`z` above :math:`L`.
Given a random global orientation at every call (``reorient=True``, the
rule :math:`\{g_k R\}`), :math:`S^\beta_{QR} = S^\beta_Q D^\beta(R)`: the
residual averages to zero over :math:`R`, and Schur orthogonality gives its
mean square

.. math:: \mathbb{E}_R \|r_{QR}\|^2 = \sum_{\beta \ne (0,+1)}
   \|S^{\beta\,T}_Q c^\beta\|_F^2 / d_\beta

(no cross terms between the two parities of one :math:`\lambda`, since a
rule closed under inversion aliases only :math:`\sigma = (-1)^\lambda`).

The coefficients are measured once on a Lebedev probe of degree :math:`P`;
for a spectrum that decays with :math:`\lambda` they are reliable up to
:math:`\lambda \approx P/2 + 1`, so the prediction is trusted for rules of
degree :math:`L \le (P-1)/2` (whose residual is dominated by
:math:`\lambda = L + 1, L + 2`). :func:`recommend_quadrature` raises the probe
degree through :data:`PROBE_DEGREES` until a trusted rule meets the
tolerance.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Optional, Union

from . import o3
from .metrics import aliasing, predict_residuals
from .models import PROPERTY_KINDS, evaluate_rotated, load

__all__ = [
    "CANDIDATE_DEGREES",
    "PROBE_DEGREES",
    "Recommendation",
    "aliasing",
    "check_tolerance",
    "predict_residuals",
    "recommend_quadrature",
    "trusted_degrees",
]

#: degrees whose rules differ (every degree has its own smallest rule)
CANDIDATE_DEGREES = (1, 2, 3, 4, 5, 6, 7, 8, 9)
#: probe degrees tried in turn; a probe of degree P trusts rules of degree <= (P - 1) // 2
PROBE_DEGREES = (7, 11, 15, 19)
#: the properties a tolerance can be given for
TOLERANCE_PROPERTIES = ("energy", "forces", "stress")


def trusted_degrees(
    probe_degree: Optional[int], candidates: Sequence[int] = CANDIDATE_DEGREES
) -> list[int]:
    """Candidates whose residual a probe of this degree predicts reliably:
    ``L <= (P - 1) // 2``, so that the sectors ``L + 1`` and ``L + 2`` that
    dominate the residual are measured with little aliasing."""
    if probe_degree is None:
        return []
    return [c for c in candidates if c <= (probe_degree - 1) // 2]


@dataclasses.dataclass
class Recommendation:
    """Result of :func:`recommend_quadrature`.

    ``degree`` and ``quadrature`` (``symmd.o3.quadrature(degree)``) are the
    choice; ``predicted[prop][L]`` the predicted RMS residual of each trusted
    candidate (eV, eV/A, eV/A^3), ``tolerance[prop]`` the targets,
    ``probe_degree`` the last probe evaluated, ``probe_copies`` the rotated
    copies evaluated for the decision, ``reached`` whether every tolerance is
    met.
    """

    degree: int
    quadrature: o3.Quadrature
    predicted: dict
    tolerance: dict
    probe_degree: int
    probe_copies: int
    reached: bool

    def __str__(self) -> str:
        preds = "; ".join(
            f"{prop}: " + ", ".join(f"L={deg} {val:.2e}" for deg, val in values.items())
            for prop, values in self.predicted.items()
        )
        status = "meets" if self.reached else "does NOT meet"
        return (
            f"degree {self.degree} ({self.quadrature.name}, {len(self.quadrature)} copies) "
            f"{status} the tolerance {self.tolerance}; predicted residuals {preds} "
            f"(probe degree {self.probe_degree}, {self.probe_copies} copies evaluated)"
        )


def check_tolerance(tolerance, properties: Optional[Sequence[str]] = None) -> dict[str, float]:
    """``{property: tolerance}`` from a number (for ``properties``, default
    forces) or a dict; ValueError for an unknown property or a value that is
    not positive."""
    if isinstance(tolerance, Mapping):
        tol = dict(tolerance)
    else:
        tol = {prop: tolerance for prop in (properties or ("forces",))}
    for prop, value in tol.items():
        if prop not in TOLERANCE_PROPERTIES:
            raise ValueError(f"tolerance is defined for {list(TOLERANCE_PROPERTIES)}, got {prop!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"the tolerance for {prop} must be a positive number, got {value!r}")
    return {prop: float(value) for prop, value in tol.items()}


def recommend_quadrature(
    model,
    atoms,
    tolerance: Union[float, Mapping[str, float]] = 1e-3,
    *,
    properties: Optional[Sequence[str]] = None,
    reorient: bool = False,
    candidates: Sequence[int] = CANDIDATE_DEGREES,
    probes: Sequence[int] = PROBE_DEGREES,
    batch_size: Optional[int] = None,
) -> Recommendation:
    """The smallest quadrature whose predicted twirl residual meets ``tolerance``.

    Parameters
    ----------
    model: anything :func:`symmd.models.load` accepts.
    atoms: the ``ase.Atoms`` the rule is chosen for.
    tolerance: the largest acceptable RMS residual of the averaged output
        against the exact twirl: a number for ``properties`` (default
        forces, eV/A, RMS over atoms), or ``{"forces": eV/A, "energy": eV,
        "stress": eV/A^3}``.
    reorient: predict for a rule given a random orientation at every call
        (the calculator's ``reorient=True``).
    candidates, probes: the degrees considered, and the probe degrees tried
        in turn (a probe of degree P trusts candidates of degree <= (P - 1) // 2).

    Each probe is one batched evaluation of ``lebedev(P)`` (416, 1200, 2752,
    5840 copies for P = 7, 11, 15, 19). If no candidate meets the tolerance
    (e.g. below the model's float32 round-off), the best predicted one is
    returned with ``reached=False`` and a warning.
    """
    tol = check_tolerance(tolerance, properties)
    if any(not isinstance(p, int) or p < 2 for p in probes) or not probes:
        raise ValueError(f"probes must be integer degrees >= 2, got {list(probes)!r}")
    adapter = load(model)
    candidates = sorted(set(int(c) for c in candidates))
    predicted: dict[str, dict[int, float]] = {}
    copies = 0
    for degree in sorted(probes):
        trusted = trusted_degrees(degree, candidates)
        if not trusted:
            continue
        probe = o3.lebedev(degree)
        out = evaluate_rotated(adapter, atoms, probe, tuple(tol), batch_size)
        copies += len(probe)
        predicted = {}
        for prop in tol:
            residual = predict_residuals(
                out[prop], probe, PROPERTY_KINDS[prop], trusted, reorient=reorient
            )
            predicted[prop] = {c: float(r.pow(2).mean().sqrt()) for c, r in residual.items()}
        good = [c for c in trusted if all(predicted[p][c] <= tol[p] for p in tol)]
        if good:
            return Recommendation(
                good[0], o3.quadrature(good[0]), predicted, tol, degree, copies, True
            )
        if trusted[-1] == candidates[-1]:
            break
    if not predicted:
        raise ValueError(
            f"no probe in {list(probes)} can judge the candidates {candidates}: raise the probes"
        )
    best = min(predicted[next(iter(tol))], key=lambda c: max(predicted[p][c] / tol[p] for p in tol))
    result = Recommendation(best, o3.quadrature(best), predicted, tol, degree, copies, False)
    warnings.warn(f"no quadrature meets the tolerance: {result}", stacklevel=2)
    return result
