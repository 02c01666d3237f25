"""The calculator's modes as what they apply: averaging, the projection, or both.

A mode is a pair of cures applied in this order to the model's raw output:

- ``"average"``: the twirl over the quadrature (cures the equivariance error);
- ``"project"``: the minimal-norm change of the forces to zero net force and,
  with no periodic direction, zero net torque, and the symmetric part of the
  stress (cures the momentum and angular-momentum leaks of direct forces,
  which a twirl keeps: the sum of equivariant per-atom vectors is an
  equivariant vector, not zero).

``"average+project"`` applies both; the twirl stays exactly equivariant under
the projection, which is itself equivariant. The monitor asks for the mode
that adds the cure its flags need (:func:`cure`); the calculator switches.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MODES", "compose", "cure", "parts"]

#: every mode a calculator can be in (``symmetrize`` also takes ``"adaptive"``)
MODES = ("none", "project", "average", "average+project")


def parts(mode: str) -> tuple[bool, bool]:
    """``(average, project)`` of ``mode``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    return mode.startswith("average"), mode.endswith("project")


def compose(average: bool, project: bool) -> str:
    """The mode that applies the cures asked for."""
    if average:
        return "average+project" if project else "average"
    return "project" if project else "none"


def cure(mode: str, flags: Iterable[str], projectable: Iterable[str]) -> str:
    """The mode that adds to ``mode`` the cure of each flagged metric: the
    projection for those in ``projectable`` (momentum, net force, ...),
    averaging for every other one. Equal to ``mode`` when it already applies
    every cure (the flags persist: symmetry cannot help)."""
    average, project = parts(mode)
    kinds = set(projectable)
    for name in flags:
        if name in kinds:
            project = True
        else:
            average = True
    return compose(average, project)
