"""The accuracy budget of :func:`symmd.finetune`: the most symmetric model
whose force MAE on the validation set is at most ``1 + max_mae_increase``
times that of the un-fine-tuned model.

Every run of the gamma scan is measured on the same validation set (force MAE
against the labels, force equivariance error A as the rms over atoms on the
held-out quadrature); the un-fine-tuned model is a candidate too (increase
0), so the selection always exists. The scan is returned as
``FinetuneResult.scan`` and written to ``out/scan.json``; :func:`format_scan`
prints it as a table.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Optional

#: gammas scanned by ``max_mae_increase`` when none are given
BUDGET_GAMMAS = (1.0, 10.0, 100.0, 1000.0, 10000.0)

__all__ = ["BUDGET_GAMMAS", "check_budget", "format_scan", "select"]


def check_budget(value) -> Optional[float]:
    """``max_mae_increase`` as a float (None passes through)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(
            f"max_mae_increase must be a number >= 0 (a fraction: 0.10 allows 10 % more force "
            f"MAE than the un-fine-tuned model), got {value!r}"
        )
    return float(value)


def _row(result, reference_mae: float, budget: float, label: str) -> dict[str, Any]:
    m = result.metrics["metrics"]
    mae = m["forces"]["mae"]
    increase = mae / reference_mae - 1.0 if reference_mae > 0 else 0.0
    row = {
        "run": label,
        "gamma": result.gamma,
        "forces_mae": mae,
        "mae_increase": increase,
        "forces_A_rms": m["forces"]["A_rms"],
        "energy_mae": m["energy"].get("mae"),
        "energy_A_per_atom_rms": m["energy"]["A_per_atom_rms"],
        "train_seconds": result.metrics["train_seconds"],
        # the reference is within its own budget by definition (round-off aside)
        "within_budget": label == "raw" or mae <= (1.0 + budget) * reference_mae,
        "path": result.metrics.get("paths", {}).get("json"),
    }
    return row


def select(reference, results: list, budget: float, out) -> Any:
    """The result with the lowest force A within ``budget``, with ``scan`` set.

    ``reference``: the un-fine-tuned model's result (its force MAE is the
    budget's base); ``results``: one per gamma. Ties go to the smaller gamma.
    """
    ref_mae = reference.metrics["metrics"]["forces"]["mae"]
    candidates = [(reference, "raw")] + [(r, f"gamma={r.gamma:g}") for r in results]
    rows = [_row(r, ref_mae, budget, label) for r, label in candidates]
    inside = [i for i, row in enumerate(rows) if row["within_budget"]]
    best = min(inside, key=lambda i: (rows[i]["forces_A_rms"], i))
    for i, row in enumerate(rows):
        row["selected"] = i == best
    chosen = candidates[best][0]
    scan = {
        "max_mae_increase": budget,
        "reference_forces_mae": ref_mae,
        "reference_forces_A_rms": rows[0]["forces_A_rms"],
        "evaluated_on": reference.metrics["evaluated_on"],
        "selected": rows[best]["run"],
        "A_reduction": rows[0]["forces_A_rms"] / max(rows[best]["forces_A_rms"], 1e-300),
        "rows": rows,
    }
    if out is not None:
        (pathlib.Path(out) / "scan.json").write_text(json.dumps(scan, indent=1))
    chosen.scan = scan
    return chosen


def format_scan(scan: dict) -> str:
    """The scan as a text table (meV units), the selected run marked."""
    lines = [
        f"budget: force MAE <= {1 + scan['max_mae_increase']:.3g} x that of the un-fine-tuned "
        f"model ({1e3 * scan['reference_forces_mae']:.2f} meV/A) on the {scan['evaluated_on']} set",
        "        run  F MAE meV/A  increase  A_F meV/A  E MAE meV/at  A_E meV/at  budget",
    ]
    for row in scan["rows"]:
        e_mae = row["energy_mae"]
        lines.append(
            f"{row['run']:>11}  {1e3 * row['forces_mae']:11.2f}  {100 * row['mae_increase']:+7.1f}%"
            f"  {1e3 * row['forces_A_rms']:9.3f}"
            f"  {float('nan') if e_mae is None else 1e3 * e_mae:12.3f}"
            f"  {1e3 * row['energy_A_per_atom_rms']:10.4f}"
            f"  {'in' if row['within_budget'] else 'over':>6}{'  <- selected' if row['selected'] else ''}"
        )
    lines.append(
        f"selected {scan['selected']}: A_F {scan['A_reduction']:.2f}x lower than the "
        "un-fine-tuned model"
    )
    return "\n".join(lines)
