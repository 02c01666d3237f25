"""Every example runs (reduced: fewer steps, lower lambda) and says what it wrote."""

import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # MD runs and scripts: the full tier

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    "name,expected",
    [
        ("md_monitoring.py", "log: md_monitoring.csv"),
        ("symmetric_relaxation.py", "space group Pm-3m (221) -> Pm-3m (221)"),
        ("diagnose_model.py", "wrote diagnose_model.json"),
        ("adaptive_md.py", "final mode"),
        ("phonons.py", "TA split at X"),
        ("finetune_readout.py", "tuned, gamma=10 "),
    ],
)
def test_example_runs(name, expected, tmp_path):
    env = dict(os.environ, SYMMD_EXAMPLE_STEPS="20", SYMMD_EXAMPLE_QUICK="1")
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert expected in out.stdout
