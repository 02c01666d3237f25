"""The guard of tests/conftest.py: a test run that leaves files in the
checkout fails (checked on a scratch git repository)."""

import shutil
import subprocess

import pytest
from helpers import checkout_files


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_new_files_in_a_checkout_are_seen_caches_are_not(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    assert checkout_files(repo) is None  # not a checkout: the guard stands aside
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / ".gitignore").write_text("symmd-md*.csv\n.venv/\n")
    (repo / ".venv" / "lib").mkdir(parents=True)
    (repo / ".venv" / "lib" / "a.py").write_text("")
    before = checkout_files(repo)
    (repo / "pkg" / "__pycache__").mkdir(parents=True)
    (repo / "pkg" / "__pycache__" / "m.pyc").write_text("")
    (repo / ".venv" / "lib" / "b.py").write_text("")  # inside an ignored folder: one entry
    assert checkout_files(repo) == before
    (repo / "symmd-md.1.csv").write_text("step\n")  # ignored, but litter all the same
    (repo / "pkg" / "out.json").write_text("{}")
    assert checkout_files(repo) - before == {"!! symmd-md.1.csv", "?? pkg/out.json"}
