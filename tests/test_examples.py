"""Every example runs (reduced: fewer steps, lower lambda) and says what it wrote."""

import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # MD runs and scripts: the full tier

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
# every example is checked for deprecation/future warnings


@pytest.mark.parametrize(
    "name,expected",
    [
        ("md_monitoring.py", "log: {out}/md_monitoring.csv"),
        ("symmetric_relaxation.py", "Pm-3m (221) -> Pm-3m (221)"),
        ("diagnose_model.py", "wrote {out}/diagnose_model.json"),
        ("adaptive_md.py", "log: {out}/adaptive_md.csv"),
        ("phonons.py", "TA split at X"),
        ("finetune_readout.py", "tuned, gamma=10 "),
    ],
)
def test_example_runs(name, expected, tmp_path):
    """Each example writes only into --out, and shows no deprecation or future
    warning (the ones symmd or its examples would cause)."""
    out, cwd = tmp_path / "out", tmp_path / "cwd"
    cwd.mkdir()
    env = dict(
        os.environ,
        SYMMD_EXAMPLE_STEPS="20",
        SYMMD_EXAMPLE_QUICK="1",
        PYTHONWARNINGS="default::DeprecationWarning,default::FutureWarning",
        # this checkout's symmd, whatever the environment has installed
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(EXAMPLES.parent), os.environ.get("PYTHONPATH")])
        ),
    )
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--out", str(out)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected.format(out=out) in result.stdout
    assert list(cwd.iterdir()) == []
    assert "DeprecationWarning" not in result.stderr, result.stderr[-2000:]
    assert "FutureWarning" not in result.stderr, result.stderr[-2000:]
