"""``symmd plot``: the figure of a monitor log (CSV written by :class:`~symmd.Monitor`).

Three panels share one x axis, time in fs when the log has a ``time_fs``
column for every measured row (``step`` otherwise): the relative force
equivariance error ``A_F / F_rms`` (log scale), the temperature (K) and the
energies (eV). Mode switches (rows flagged ``switch:...``) and flagged checks
are vertical lines placed on the same axis, with a legend.
"""

from __future__ import annotations

import csv
import math
from typing import Optional

from ._plotting import pyplot

__all__ = ["plot_log", "read_log"]

#: the columns every symmd monitor log has
REQUIRED = ("step", "time_fs", "mode", "temperature", "rel_forces", "flags")


def _float(text: Optional[str]) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def read_log(path: str) -> list[dict]:
    """Rows of a symmd monitor log; ValueError when ``path`` is not one."""
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames or []
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path!r} is not a symmd monitor log (not a CSV file: {error})") from None
    missing = [name for name in REQUIRED if name not in fields]
    if missing:
        raise ValueError(
            f"{path!r} is not a symmd monitor log: it lacks the columns {missing} "
            f"(its header is {fields[:8]}); write one with `symmd md --log` or Monitor(log=...)"
        )
    if not rows:
        raise ValueError(f"the log {path!r} has a header but no rows")
    return rows


def _x_of(rows: list[dict]):
    """``(x(row), label)``: time in fs when the log has it. A row without
    ``time_fs`` (an older log, a flag written without a time step) is placed
    at ``step x dt``, with ``dt`` read off the rows that have both; a log
    without any time uses the step axis."""
    times = [(_float(r["step"]), _float(r.get("time_fs"))) for r in rows]
    pairs = [(step, t) for step, t in times if math.isfinite(t) and step > 0]
    if pairs or all(math.isfinite(t) for _, t in times):
        dt = pairs[0][1] / pairs[0][0] if pairs else math.nan

        def x(row):
            t = _float(row.get("time_fs"))
            return t if math.isfinite(t) else _float(row["step"]) * dt

        return x, "time (fs)"
    return (lambda row: _float(row["step"])), "step"


def plot_log(log: str, figure: str) -> None:
    """Write the figure of the monitor log ``log`` to ``figure`` (png, pdf, ...).

    Raises ValueError naming the file when it is not a symmd monitor log.
    """
    rows = read_log(log)
    x, xlabel = _x_of(rows)
    data = [r for r in rows if not r.get("flags", "").startswith("switch")]
    xs = [x(r) for r in data]

    def col(name):
        return [_float(r.get(name)) for r in data]

    plt = pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(6, 6.5), sharex=True)
    axes[0].plot(xs, col("rel_forces"), "o-", ms=3)
    axes[0].set_ylabel("A_F / F_rms")
    if any(math.isfinite(v) and v > 0 for v in col("rel_forces")):
        axes[0].set_yscale("log")
    axes[1].plot(xs, col("temperature"), "-", color="C1")
    axes[1].set_ylabel("T (K)")
    axes[2].plot(xs, col("etot"), "-", color="C2", label="E_tot")
    axes[2].plot(xs, col("epot"), "-", color="C3", label="E_pot")
    axes[2].set_ylabel("energy (eV)")
    axes[2].legend(fontsize=7, loc="upper right")
    axes[2].set_xlabel(xlabel)
    marks = {"switch": ("C2", "mode switch"), "flag": ("C3", "flagged check")}
    seen = set()
    for row in rows:
        flags = row.get("flags", "")
        if not flags:
            continue
        kind = "switch" if flags.startswith("switch") else "flag"
        seen.add(kind)
        for ax in axes:
            ax.axvline(x(row), color=marks[kind][0], alpha=0.4, lw=1)
    if seen:
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], color=marks[k][0], alpha=0.6, lw=1, label=marks[k][1])
            for k in ("switch", "flag")
            if k in seen
        ]
        axes[0].legend(handles=handles, fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(figure, dpi=120)
    plt.close(fig)
