"""What one check of the :class:`~symmd.Monitor` saw and wants, and the
records it keeps (the calculator reads them and acts)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from .o3 import Quadrature

__all__ = ["Draws", "InstabilityWarning", "Observation", "free_name"]


class InstabilityWarning(UserWarning):
    """A monitored MD step failed a check with ``action="warn"``."""


@dataclasses.dataclass
class Observation:
    """What :meth:`Monitor.check` saw at one step, and what it asks for.

    ``row``: the logged fields (:data:`LOG_FIELDS`); ``flags``: ``(metric,
    value, limit)`` of every failed check; ``errors``: equivariance errors
    estimated at this step for ``calc.results`` (``equivariance_error_energy``
    eV, ``..._forces`` ``[N]`` eV/A, ``..._stress`` eV/A^3; empty when not
    measured); ``message``: one line naming the step, metric and value;
    ``request``: ``None``, a mode to switch to (``"none"``, ``"project"``,
    ``"average"``, ``"average+project"``), or ``"stop"``; ``last_good``: the frame file written when stopping.
    """

    step: int
    row: dict
    flags: list
    errors: dict
    message: str = ""
    request: Optional[str] = None
    last_good: Optional[str] = None

    @property
    def flagged(self) -> bool:
        return bool(self.flags)


@dataclasses.dataclass
class Draws:
    """The Haar-random rotations one check wants, and their responses.

    ``step``: the force evaluation checked; ``rotations``: ``m`` Haar-random
    O(3) elements (:func:`symmd.o3.random_o3`); ``responses``: the model's
    responses to them (a :class:`~symmd.models.Responses`, ``[m, ...]`` per
    property, rotated frame), filled in by whoever evaluates them (the
    calculator, in the step's own batch); ``None`` until then.
    """

    step: int
    rotations: Quadrature
    responses: Any = None


def free_name(path: str) -> str:
    """``path`` if it does not exist, else ``stem.1.ext``, ``stem.2.ext``, ..."""
    if not os.path.exists(path):
        return path
    stem, ext = os.path.splitext(path)
    n = 1
    while os.path.exists(f"{stem}.{n}{ext}"):
        n += 1
    return f"{stem}.{n}{ext}"
