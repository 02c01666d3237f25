"""symmd: measure and restore the rotational symmetry of unconstrained
machine-learning interatomic potentials in molecular dynamics.

Public surface (see ``docs/API.md``): :mod:`symmd.o3`, :mod:`symmd.metrics`,
:mod:`symmd.models`, :class:`SymmetryCalculator`, :class:`Monitor`,
:func:`diagnose`, :func:`diagnose_training`, :func:`recommend_quadrature`,
:func:`finetune`, :func:`export`.
"""

from . import metrics, models, o3
from .calculator import SymmetryCalculator
from .diagnose import Diagnosis, diagnose
from .errors import InstabilityError
from .export import export
from .finetune import FinetuneResult, finetune
from .monitor import InstabilityWarning, Monitor
from .recommend import Recommendation, recommend_quadrature
from .training import TrainingDiagnosis, diagnose_training, plot_training

__version__ = "0.1.0"

__all__ = [
    "Diagnosis",
    "FinetuneResult",
    "InstabilityError",
    "InstabilityWarning",
    "Monitor",
    "Recommendation",
    "SymmetryCalculator",
    "TrainingDiagnosis",
    "diagnose",
    "diagnose_training",
    "finetune",
    "export",
    "metrics",
    "models",
    "o3",
    "plot_training",
    "recommend_quadrature",
    "__version__",
]
