"""symmd: measure and restore the rotational symmetry of unconstrained
machine-learning interatomic potentials in molecular dynamics.

Public surface (see ``shared/API.md``): :mod:`symmd.o3`, :mod:`symmd.metrics`,
:mod:`symmd.models`.
"""

from . import metrics, models, o3
from .calculator import SymmetryCalculator
from .diagnose import Diagnosis, diagnose
from .errors import InstabilityError
from .monitor import InstabilityWarning, Monitor

__version__ = "0.1.0"

__all__ = ["Diagnosis", "diagnose", "InstabilityError", "InstabilityWarning", "Monitor", "SymmetryCalculator", "metrics", "models", "o3", "__version__"]
