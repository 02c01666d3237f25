r"""Quadratures over O(3).

A quadrature is a set of group elements :math:`g_k` (3x3 orthogonal matrices,
ASE row-vector convention: positions :math:`r \to r R^T`) with weights
:math:`w_k`, :math:`\sum_k w_k = 1`. Its *degree* :math:`L` means

.. math:: \sum_k w_k D^\lambda(g_k) = \int_{SO(3)} D^\lambda(g)\,dg = \delta_{\lambda 0}
   \qquad \text{for every } \lambda \le L,

and, when the rule is closed under inversion (``inversion=True``: every
:math:`g` is joined by :math:`-g` with half the weight), the same holds for
both parities of O(3).

Rules known here, by size for a given degree:

- the identity (degree 0, 1 element);
- the dihedral group D2 (degree 1, 4), the tetrahedral group T (degree 2, 12),
  the octahedral group O (degree 3, 24) and the icosahedral group I
  (degree 5, 60), from :meth:`scipy.spatial.transform.Rotation.create_group`;
- Lebedev x in-plane (any degree): :math:`R(n, \gamma) = R_z(\alpha)
  R_y(\beta) R_z(\gamma)` with :math:`n = (\alpha, \beta)` a Lebedev node of
  order :math:`\ge L` and :math:`L + 1` equally spaced :math:`\gamma`. The
  :math:`\gamma` sum of :math:`e^{-i n' \gamma}` vanishes for
  :math:`0 < |n'| \le L`, so only the column :math:`n'=0` of :math:`D^\lambda`
  survives; it is a spherical harmonic of :math:`n`, which the Lebedev rule
  integrates exactly. Hence :math:`L + 1` angles suffice (metatomic's
  SymmetrizedCalculator uses :math:`2L + 1`).
- Gauss-type SO(3) designs (degrees in :func:`design_degrees`): positive
  rules solving the moment equations :math:`\sum_k w_k D^\lambda(R_k) =
  \delta_{\lambda 0}` for :math:`\lambda \le L` with about
  :math:`(L+1)(2L+1)(2L+3)/12` rotations, computed by this package
  (:mod:`symmd.o3._design`, ``python -m symmd.o3._design`` regenerates them)
  and stored in ``symmd/o3/data/so3_designs.npz`` in float64.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Optional, Union

import numpy as np
import torch

__all__ = [
    "Quadrature",
    "check_orthogonal",
    "random_o3",
    "lebedev",
    "point_group",
    "haar",
    "quadrature",
    "LEBEDEV_ORDERS",
    "design_degrees",
    "so3_design",
]

#: Orders of :func:`scipy.integrate.lebedev_rule` (its polynomial degree of
#: exactness on the sphere). Orders 13, 25 and 27 have negative weights and are
#: never used: a positive rule of higher order replaces them.
LEBEDEV_ORDERS = (
    3,
    5,
    7,
    9,
    11,
    15,
    17,
    19,
    21,
    23,
    29,
    31,
    35,
    41,
    47,
    53,
    59,
    65,
    71,
    77,
    83,
    89,
    95,
    101,
    107,
    113,
    119,
    125,
    131,
)

_GROUPS = {"D2": 1, "T": 2, "O": 3, "I": 5}
_DESIGNS = pathlib.Path(__file__).parent / "data" / "so3_designs.npz"
_ORTHO_TOL = 1e-8


@dataclasses.dataclass(frozen=True)
class Quadrature:
    """A weighted set of O(3) elements.

    Attributes
    ----------
    rotations:
        torch float64 ``[K, 3, 3]``, orthogonal matrices (det +1 proper,
        -1 improper), acting on row vectors as ``r @ R.T``.
    weights:
        torch float64 ``[K]``, positive, summing to 1.
    degree:
        the highest :math:`\\lambda` integrated exactly, or ``None`` for random
        samples (Monte Carlo).
    name:
        a short human-readable label.
    """

    rotations: torch.Tensor
    weights: torch.Tensor
    degree: Optional[int]
    name: str

    def __post_init__(self) -> None:
        rot = torch.as_tensor(self.rotations, dtype=torch.float64)
        wts = torch.as_tensor(self.weights, dtype=torch.float64, device=rot.device)
        if rot.ndim != 3 or rot.shape[1:] != (3, 3) or rot.shape[0] == 0:
            raise ValueError(
                f"rotations must have shape [K, 3, 3] with K >= 1, got {tuple(rot.shape)}"
            )
        if wts.shape != (rot.shape[0],):
            raise ValueError(
                f"weights must have shape [K] = [{rot.shape[0]}] to match the "
                f"rotations, got {tuple(wts.shape)}"
            )
        check_orthogonal(rot, "rotations")
        if not torch.isfinite(wts).all() or abs(float(wts.sum()) - 1.0) > 1e-10:
            raise ValueError(
                f"weights must be finite and sum to 1, got sum {float(wts.sum())!r}; "
                "normalize them (weights / weights.sum())"
            )
        if self.degree is not None and (not isinstance(self.degree, int) or self.degree < 0):
            raise ValueError(f"degree must be a non-negative int or None, got {self.degree!r}")
        object.__setattr__(self, "rotations", rot)
        object.__setattr__(self, "weights", wts)

    def __len__(self) -> int:
        return int(self.rotations.shape[0])

    @property
    def has_inversion(self) -> bool:
        """True when the rule contains improper elements (det = -1)."""
        return bool((torch.linalg.det(self.rotations) < 0).any())

    def to(self, device: Union[str, torch.device, None]) -> Quadrature:
        """The same rule with its tensors on ``device`` (still float64)."""
        return Quadrature(
            self.rotations.to(device), self.weights.to(device), self.degree, self.name
        )

    def reoriented(self, rotation: Union[torch.Tensor, np.ndarray]) -> Quadrature:
        """Every element right-multiplied by one global rotation ``R``.

        The Haar measure is right-invariant, so :math:`\\sum_k w_k D(g_k R) =
        (\\sum_k w_k D(g_k)) D(R)` and the degree is preserved.
        """
        r = torch.as_tensor(rotation, dtype=torch.float64, device=self.rotations.device)
        if r.shape != (3, 3):
            raise ValueError(f"rotation must have shape [3, 3], got {tuple(r.shape)}")
        check_orthogonal(r[None], "rotation")
        return Quadrature(self.rotations @ r, self.weights, self.degree, self.name)


def check_orthogonal(rotations: torch.Tensor, name: str) -> None:
    """Raise ValueError unless every ``[..., 3, 3]`` matrix is orthogonal."""
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    err = (rotations @ rotations.transpose(-1, -2) - eye).abs()
    if not torch.isfinite(rotations).all() or float(err.max()) > _ORTHO_TOL:
        raise ValueError(
            f"{name} must be orthogonal 3x3 matrices (R R^T = I); the largest "
            f"deviation is {float(err.max()):.3g}; build them with "
            "scipy.spatial.transform.Rotation or orthogonalize them"
        )


def _with_inversion(rot: np.ndarray, w: np.ndarray, inversion: bool):
    if not inversion:
        return rot, w
    return np.concatenate([rot, -rot]), np.concatenate([w, w]) / 2


def _make(rot: np.ndarray, w: np.ndarray, degree, name: str, inversion: bool):
    rot, w = _with_inversion(rot, w, inversion)
    suffix = "+inversion" if inversion else ""
    return Quadrature(
        torch.from_numpy(rot.copy()), torch.from_numpy(w.copy()), degree, name + suffix
    )


def _check_degree(degree: int, name: str = "degree") -> int:
    if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(degree).__name__}")
    if degree < 0 or degree > LEBEDEV_ORDERS[-1]:
        raise ValueError(
            f"{name}={degree} is not supported: exact rules exist here for "
            f"0 <= {name} <= {LEBEDEV_ORDERS[-1]}"
        )
    return int(degree)


@functools.cache
def _lebedev_numpy(degree: int):
    from scipy.integrate import lebedev_rule
    from scipy.spatial.transform import Rotation

    order = min(o for o in LEBEDEV_ORDERS if o >= max(degree, 1))
    x, w = lebedev_rule(order)
    alpha = np.arctan2(x[1], x[0])
    beta = np.arccos(np.clip(x[2], -1.0, 1.0))
    n_gamma = degree + 1
    gamma = 2 * np.pi * np.arange(n_gamma) / n_gamma
    angles = np.stack(
        [np.repeat(alpha, n_gamma), np.repeat(beta, n_gamma), np.tile(gamma, len(w))],
        axis=1,
    )
    rot = Rotation.from_euler("ZYZ", angles).as_matrix()
    weights = np.repeat(w / w.sum(), n_gamma) / n_gamma
    for arr in (rot, weights):
        arr.setflags(write=False)
    return rot, weights, order


def lebedev(degree: int, inversion: bool = True) -> Quadrature:
    """Lebedev x in-plane rule exact to ``degree``.

    The smallest positive-weight scipy Lebedev order ``>= degree`` times
    ``degree + 1`` equally spaced in-plane angles (see the module docstring for
    why that is exact); ``inversion=True`` doubles it with every ``-g``.

    Returns a :class:`Quadrature` of ``N_lebedev * (degree + 1)`` (x2)
    elements, float64.
    """
    degree = _check_degree(degree)
    rot, w, order = _lebedev_numpy(degree)
    return _make(rot, w, degree, f"lebedev{order}x{degree + 1}", inversion)


@functools.cache
def _group_numpy(name: str):
    from scipy.spatial.transform import Rotation

    rot = Rotation.create_group(name).as_matrix()
    rot.setflags(write=False)
    return rot


def point_group(name: str, inversion: bool = True) -> Quadrature:
    """A finite rotation group with equal weights.

    ``name`` is one of ``"D2"`` (4 rotations, degree 1), ``"T"`` (12, degree 2),
    ``"O"`` (24, degree 3) or ``"I"`` (60, degree 5): the first :math:`\\lambda`
    with a group-invariant vector is degree + 1. ``inversion=True`` doubles the
    group with every ``-g`` (24, 48, 120 elements for T, O, I).
    """
    if name not in _GROUPS:
        raise ValueError(f"point group {name!r} is not supported; use one of {sorted(_GROUPS)}")
    rot = _group_numpy(name)
    w = np.full(len(rot), 1.0 / len(rot))
    return _make(rot, w, _GROUPS[name], name, inversion)


def haar(n: int, seed: Optional[int] = None, inversion: bool = True) -> Quadrature:
    """``n`` Haar-random rotations with equal weights (degree ``None``).

    Drawn with :meth:`scipy.spatial.transform.Rotation.random` from
    ``numpy.random.default_rng(seed)``; the same seed gives the same rule.
    ``inversion=True`` joins every ``g`` with ``-g`` (``2 n`` elements).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    rot = Rotation.random(int(n), random_state=rng).as_matrix().reshape(-1, 3, 3)
    w = np.full(len(rot), 1.0 / len(rot))
    return _make(rot, w, None, f"haar{n}", inversion)


def random_o3(m: int, rng: np.random.Generator) -> Quadrature:
    """``m`` independent Haar-random O(3) elements with equal weights.

    Each is a Haar-random proper rotation times an independent random sign,
    so proper and improper elements are equally likely (the normalized Haar
    measure of O(3)); unlike :func:`haar`, the draws are not paired with
    their inverses, which is what an unbiased variance estimate needs.
    ``rng`` is a :class:`numpy.random.Generator` (the caller owns the seed).
    """
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m must be a positive int, got {m!r}")
    from scipy.spatial.transform import Rotation

    rot = Rotation.random(int(m), random_state=rng).as_matrix().reshape(-1, 3, 3)
    rot *= rng.choice([-1.0, 1.0], size=int(m))[:, None, None]
    w = torch.full((int(m),), 1.0 / int(m), dtype=torch.float64)
    return Quadrature(torch.from_numpy(rot), w, None, f"random_o3({m})")


@functools.cache
def _designs_numpy() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    out = {}
    with np.load(_DESIGNS) as data:
        for key in data.files:
            if key.startswith("rotations_"):
                degree = int(key.split("_")[1])
                rot, w = data[key], data[f"weights_{degree}"]
                for arr in (rot, w):
                    arr.setflags(write=False)
                out[degree] = (rot, w)
    return out


def design_degrees() -> tuple[int, ...]:
    """Degrees of the shipped SO(3) designs (read from the package data)."""
    return tuple(sorted(_designs_numpy()))


def so3_design(degree: int, inversion: bool = True) -> Quadrature:
    """A shipped Gauss-type SO(3) rule exact to ``degree`` (and not above).

    Positive weights, about :math:`(L+1)(2L+1)(2L+3)/12` proper rotations,
    found by solving the moment equations (:mod:`symmd.o3._design`);
    ``inversion=True`` doubles it with every ``-g``, exact for both O(3)
    parities. Named ``"so3design{degree}x{K}"`` (``+inversion``), float64.
    """
    degree = _check_degree(degree)
    designs = _designs_numpy()
    if degree not in designs:
        raise ValueError(
            f"no SO(3) design of degree={degree} is shipped; available degrees are "
            f"{sorted(designs)}; use symmd.o3.quadrature({degree})"
        )
    rot, w = designs[degree]
    return _make(rot, w, degree, f"so3design{degree}x{len(w)}", inversion)


def _candidates(degree: int, inversion: bool):
    if degree == 0:
        yield _make(np.eye(3)[None], np.ones(1), 0, "identity", inversion)
    for name, deg in _GROUPS.items():
        if deg >= degree:
            yield point_group(name, inversion)
    yield lebedev(degree, inversion)
    for deg in design_degrees():
        if deg >= degree:
            yield so3_design(deg, inversion)


def quadrature(degree: int, inversion: bool = True) -> Quadrature:
    """The smallest exact rule known here for ``degree``.

    ========  ==================================  ================
    degree    rule                                size (inversion)
    ========  ==================================  ================
    0         identity                            2
    1         D2                                  8
    2         T                                   24
    3         O                                   48
    4         SO(3) design, 43 rotations          86
    5         I                                   120
    6         SO(3) design, 116 rotations         232
    7         SO(3) design, 172 rotations         344
    8         SO(3) design, 244 rotations         488
    9         Lebedev 9 x 10 in-plane             760
    >= 10     Lebedev x (degree + 1) in-plane     see :func:`lebedev`
    ========  ==================================  ================

    Designs: :func:`so3_design`; ties go to the point groups.
    """
    degree = _check_degree(degree)
    return min(_candidates(degree, inversion), key=len)


def metatomic_size(degree: int, inversion: bool = True) -> int:
    """Size of metatomic-ase's default rule at ``l_max = degree``.

    The smallest scipy Lebedev order ``>= degree`` (negative-weight orders
    included) times ``2 degree + 1`` in-plane angles, doubled by inversion.
    Used for the size comparison table; no metatomic import is needed.
    """
    from scipy.integrate import lebedev_rule

    if degree == 0:
        return 2 if inversion else 1
    orders = sorted(set(LEBEDEV_ORDERS) | {13, 25, 27})
    order = min(o for o in orders if o >= degree)
    n_sphere = lebedev_rule(order)[1].shape[0]
    return n_sphere * (2 * degree + 1) * (2 if inversion else 1)
