r"""``symmd.export``: a metatomic model that averages with symmd's rules.

The file written is a metatomic ``AtomisticModel`` (TorchScript) that every
metatomic engine loads without symmd: i-PI (``i-pi-py_driver -m metatomic``),
LAMMPS (``pair_style metatomic``), torch-sim (metatomic-torchsim), ASE
(``metatomic_ase.MetatomicCalculator``). Inside, for each system the engine
passes, it rotates the positions, the cell and the engine's own neighbour-pair
vectors (:math:`r \to r R_k^T`), evaluates the wrapped model on the rotated
copies in batched calls, and returns the twirl
:math:`\Pi = \sum_k w_k \rho(g_k)^{-1} f(g_k x)` (see
:mod:`symmd._export_module`). The engine differentiates the averaged energy,
so its forces and virial are those of :math:`\Pi` (the rotation is part of the
graph).

Monitoring: with ``monitor_every=N`` every N-th call also evaluates
``rotations`` Haar-random O(3) copies (on a CPU in a forward-only call of
their own, on an accelerator in the step's batch) and publishes
:math:`A = \sqrt{\widehat{A^2}}` of the wrapped model's energy (per system,
energy units) as ``symmd::equivariance_error``, and of its non-conservative
forces (per atom) as ``symmd::force_equivariance_error`` when it has them,
held between checks. :math:`\widehat{A^2}` is unbiased; it is a lower bound
on the squared model error, since the orientation average of the squared
error of the raw model equals the squared error of the averaged model plus
:math:`A^2`. ``uncertainty=True`` also publishes :math:`A / N` for every atom
as the standard per-atom ``energy_uncertainty`` (eV/atom), which i-PI's
metatomic driver (``uncertainty_threshold``) and
``metatomic_ase.MetatomicCalculator(uncertainty_threshold=...)`` compare to
their threshold and warn about.
"""

from __future__ import annotations

import os
import secrets
from typing import Optional, Union

from . import o3
from .models import CPU_ATOMS_PER_CALL, MetatomicAdapter, load

__all__ = ["export", "MODES"]

# output names (the TorchScript module, symmd._export_module, spells them out)
ENERGY_ERROR = "symmd::equivariance_error"
FORCE_ERROR = "symmd::force_equivariance_error"
UNCERTAINTY = "energy_uncertainty"
NC_FORCE = "non_conservative_force"
NC_STRESS = "non_conservative_stress"

MODES = ("average", "none", "project")


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _atomistic_model(model):
    if isinstance(model, MetatomicAdapter):
        return model.model
    adapter = load(model)
    if not isinstance(adapter, MetatomicAdapter):
        raise TypeError(
            f"a {type(model).__name__} cannot be exported: symmd.export wraps metatomic "
            "models (an exported .pt file, a metatrain .ckpt or an AtomisticModel); "
            "average an ASE calculator or a Python callable with "
            "symmd.SymmetryCalculator(model, symmetrize='average') instead"
        )
    return adapter.model


def _rule(quadrature, model, structure, tolerance, reorient: bool, batch_size) -> o3.Quadrature:
    if isinstance(quadrature, o3.Quadrature):
        return quadrature
    if quadrature == "auto":
        if structure is None:
            raise ValueError(
                "quadrature='auto' chooses the rule on a structure at export time; "
                "pass structure=ase.Atoms(...) (a typical configuration of the run)"
            )
        from .recommend import recommend_quadrature

        return recommend_quadrature(
            model, structure, tolerance, reorient=reorient, batch_size=batch_size
        ).quadrature
    if isinstance(quadrature, bool) or not isinstance(quadrature, int):
        raise ValueError(
            f"quadrature must be an int degree, a symmd.o3.Quadrature or 'auto', got {quadrature!r}"
        )
    return o3.quadrature(quadrature)


def _output(source, description: str):
    from metatomic.torch import ModelOutput

    return ModelOutput(
        unit=source.unit,
        sample_kind=source.sample_kind,
        explicit_gradients=[],
        description=description,
    )


def export(
    model,
    path: Union[str, os.PathLike],
    *,
    symmetrize: str = "average",
    quadrature: Union[int, o3.Quadrature, str] = 3,
    reorient: bool = False,
    monitor_every: Optional[int] = None,
    rotations: int = 2,
    batch_size: Optional[int] = None,
    uncertainty: bool = False,
    structure=None,
    tolerance: float = 1e-3,
    seed: Optional[int] = None,
):
    """Write a metatomic model that averages ``model`` over O(3) (module docstring).

    Parameters
    ----------
    model: a metatomic model: path to an exported ``.pt`` (or a metatrain
        ``.ckpt``), or an ``AtomisticModel``. ASE calculators and Python
        callables cannot run inside an engine: use :class:`symmd.SymmetryCalculator`.
    path: the output file (its directory must exist).
    symmetrize: ``"average"`` (twirl over the rule), ``"none"`` (raw
        predictions) or ``"project"``: the outputs the module can reach are
        projected (non-conservative forces to zero net force, and zero net
        torque for a system with no periodic direction or with none that a
        neighbour pair crosses, such as a cluster in the vacuum box that
        i-PI and LAMMPS require; the symmetric part of
        the non-conservative stress). Conservative forces and the virial are
        computed by the engine from the raw energy and are *not* projected.
    quadrature: an int degree L (``symmd.o3.quadrature(L)``, the smallest
        exact rule: 24 / 48 / 120 copies for L = 2 / 3 / 5), a
        :class:`~symmd.o3.Quadrature`, or ``"auto"``: the rule
        :func:`symmd.recommend_quadrature` picks on ``structure`` for
        ``tolerance`` (eV/A, RMS force residual), at export time.
    reorient: a new random global orientation of the rule at every call.
    monitor_every: every N-th call (the first included) also estimates the
        equivariance error from ``rotations`` (>= 2) Haar-random copies.
    batch_size: the most rotated copies per call of the wrapped model
        (``None``: :func:`symmd.models.chunk_plan`'s default).
    uncertainty: publish :math:`A_E / N` per atom as ``energy_uncertainty``
        (needs ``monitor_every``).
    seed: seeds the Haar draws and reorientations (call ``n`` uses
        ``seed + n``); ``None``: a random seed stored in the file.

    Returns the saved ``AtomisticModel`` (Python object). It declares the
    capabilities of ``model`` (atomic types, interaction range, units, dtype,
    devices) with the outputs ``energy``, the non-conservative force/stress
    when ``model`` has them, and the monitoring outputs when asked.
    """
    from metatomic.torch import AtomisticModel, ModelCapabilities, ModelOutput

    from ._export_module import SymmetrizedEnergy

    if symmetrize not in MODES:
        raise ValueError(f"symmetrize must be one of {list(MODES)}, got {symmetrize!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"cannot write the exported model to {path!r}: the directory {folder!r} does "
            "not exist; create it first"
        )
    if monitor_every is not None:
        monitor_every = _positive_int(monitor_every, "monitor_every")
    rotations = _positive_int(rotations, "rotations", 2)
    if batch_size is not None:
        batch_size = _positive_int(batch_size, "batch_size")
    if uncertainty and monitor_every is None:
        raise ValueError(
            "uncertainty=True publishes the monitored equivariance error, so it needs "
            "monitor_every=N (e.g. monitor_every=10)"
        )
    atomistic = _atomistic_model(model)
    caps = atomistic.capabilities()
    if symmetrize == "average":
        rule = _rule(quadrature, atomistic, structure, tolerance, reorient, batch_size)
    else:
        rule = o3.quadrature(0)

    declared = list(getattr(atomistic, "_model_capabilities_outputs_names", caps.outputs))
    nc_force = next((n for n in (NC_FORCE, "non_conservative_forces") if n in declared), "")
    nc_stress = NC_STRESS if NC_STRESS in declared else ""
    what = {"average": f"O(3) average over {rule.name}", "none": "raw", "project": "projected"}
    outputs = {"energy": _output(caps.outputs["energy"], f"symmd: {what[symmetrize]} energy")}
    if nc_force:
        outputs[NC_FORCE] = _output(caps.outputs[nc_force], f"symmd: {what[symmetrize]} forces")
    if nc_stress:
        outputs[NC_STRESS] = _output(caps.outputs[nc_stress], f"symmd: {what[symmetrize]} stress")
    unit = caps.outputs["energy"].unit
    if monitor_every is not None:
        outputs[ENERGY_ERROR] = ModelOutput(
            unit=unit,
            sample_kind="system",
            description="symmd: equivariance error A of the wrapped model's energy "
            f"(sqrt of an unbiased A^2 from {rotations} Haar draws, every {monitor_every} calls)",
        )
        if nc_force:
            outputs[FORCE_ERROR] = ModelOutput(
                unit=caps.outputs[nc_force].unit,
                sample_kind="atom",
                description="symmd: equivariance error A of the non-conservative forces",
            )
        if uncertainty:
            outputs[UNCERTAINTY] = ModelOutput(
                unit=unit,
                sample_kind="atom",
                description="symmd: energy equivariance error A per atom (A / N)",
            )
    module = SymmetrizedEnergy(
        atomistic.module,
        rule.rotations,
        rule.weights,
        mode=symmetrize,
        reorient=bool(reorient),
        batch_size=batch_size or 0,
        atoms_per_call=CPU_ATOMS_PER_CALL,
        monitor_every=monitor_every or 0,
        n_draws=rotations,
        nc_force=nc_force,
        nc_stress=nc_stress,
        seed=secrets.randbelow(2**31) if seed is None else int(seed),
    )
    capabilities = ModelCapabilities(
        outputs=outputs,
        atomic_types=caps.atomic_types,
        interaction_range=caps.interaction_range,
        length_unit=caps.length_unit,
        supported_devices=caps.supported_devices,
        dtype=caps.dtype,
    )
    exported = AtomisticModel(module.eval(), atomistic.metadata(), capabilities)
    exported.save(path)
    return exported
