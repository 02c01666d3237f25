"""Exceptions raised by symmd."""

from __future__ import annotations

from typing import Optional

from ase.calculators.calculator import CalculationFailed

__all__ = ["InstabilityError"]


class InstabilityError(CalculationFailed):
    """A monitored MD step failed a check and the monitor asked to stop.

    The message names the step, the metric and its value; ``step``,
    ``metric``, ``value``, ``threshold`` and ``last_good`` (the extxyz file
    holding the last frame that passed every check, or None) are kept as
    attributes.
    """

    def __init__(
        self,
        message: str,
        step: int = -1,
        metric: str = "",
        value: float = float("nan"),
        threshold: float = float("nan"),
        last_good: Optional[str] = None,
    ):
        super().__init__(message)
        self.step = step
        self.metric = metric
        self.value = value
        self.threshold = threshold
        self.last_good = last_good
