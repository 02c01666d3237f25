"""Benchmarks that must not rot: run in their small CPU form (slow tier)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu"]
        + ["--json", str(out), "--repeats", "1", "--md-rounds", "1", "--md-steps", "4"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["device"] == "cpu"
    (batched,) = result["batched"]
    assert (batched["n_atoms"], batched["degree"], batched["copies"]) == (32, 2, 24)
    # one call per copy in the loop, fewer in the batched plan, the same responses
    assert batched["loop"]["model_calls"] == 24 and batched["batched"]["model_calls"] < 24
    assert batched["batched"]["copies_per_s"] > 0 and batched["loop"]["copies_per_s"] > 0
    assert batched["max_force_diff"] < 1e-4  # float32 round-off
    (export,) = result["export"]
    assert export["copies"] == 48 and export["average_over_raw"] > 1
    (md,) = result["md"]
    for name in ("plain", "none", "monitor10", "export_monitor10"):
        assert md[name]["ms_per_step"] > 0
    assert md["plain"]["vs_plain"] == 1
