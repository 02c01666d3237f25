"""Exceptions raised by symmd."""

from ase.calculators.calculator import CalculationFailed

__all__ = ["InstabilityError"]


class InstabilityError(CalculationFailed):
    """A monitored MD step failed a check with ``action="raise"``.

    The message names the step, the metric and its value; ``step``,
    ``metric``, ``value`` and ``threshold`` are kept as attributes.
    """

    def __init__(
        self,
        message: str,
        step: int = -1,
        metric: str = "",
        value: float = float("nan"),
        threshold: float = float("nan"),
    ):
        super().__init__(message)
        self.step = step
        self.metric = metric
        self.value = value
        self.threshold = threshold
