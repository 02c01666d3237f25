"""The CLI's Langevin thermostat holds the temperature it is given.

``--friction`` is in 1/fs and converted to ASE's time unit; passed unchanged
(the old bug) the default 0.02 became 0.002 1/fs and a 300 K run of the
default cell averaged about 205 K over its first picosecond.
"""

import csv

import numpy as np
import pytest

from symmd.cli import main


def block_mean(values, n_blocks):
    """Mean and its standard error from ``n_blocks`` contiguous block means
    (blocks longer than the correlation time make the means independent)."""
    blocks = np.array_split(np.asarray(values, dtype=float), n_blocks)
    means = np.array([b.mean() for b in blocks])
    return float(means.mean()), float(means.std(ddof=1) / np.sqrt(n_blocks))


@pytest.mark.heavy  # minutes-long check: outside CI's budget (README, Test)
@pytest.mark.slow
def test_langevin_run_of_the_default_cell_averages_its_temperature(tmp_path, capsys):
    log = tmp_path / "t.csv"
    # 2.4 ps at 2 fs; friction 0.02 1/fs: relaxation time 50 fs = 25 steps
    args = ["md", "--steps", "1200", "--temperature", "300", "--quiet", "--log", str(log)]
    assert main(args) == 0
    rows = list(csv.DictReader(open(log)))
    temperature = [float(r["temperature"]) for r in rows if 200 <= int(r["step"]) < 1200]
    assert len(temperature) == 100  # one row per 10 steps
    # blocks of 100 steps = 200 fs = 4 relaxation times
    mean, error = block_mean(temperature, 10)
    # 32 atoms: the instantaneous T spreads by 300 K * sqrt(2 / 96) = 43 K
    assert 20 < np.std(temperature) < 80
    assert error < 15.0, (mean, error)
    print(f"T = {mean:.1f} +- {error:.1f} K")
    assert abs(mean - 300.0) < 3 * error, (mean, error)
