"""The GPU tests' process isolation (tests/gpu_isolation.py), checked on CPU with gpu-marked toy tests.

No CUDA is needed to prove the mechanism: a `gpu`-marked test that leaves something in
sys.modules (as `import unsloth` does) must not be seen by the next one, each must run
in a process other than the parent pytest, and pass / skip / fail must come back as such.
"""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

TOY_TESTS = '''
import os, sys
import pytest

pytestmark = pytest.mark.gpu


def test_first_leaves_a_patched_module_behind():
    sys.modules["patched_like_unsloth"] = object()
    assert os.getpid() != int(os.environ["PARENT_PID"])


def test_second_does_not_see_it():
    assert "patched_like_unsloth" not in sys.modules
    assert os.getpid() != int(os.environ["PARENT_PID"])


def test_a_skip_comes_back_as_a_skip():
    pytest.skip("no widget here")


def test_a_failure_comes_back_with_its_message():
    assert 1 + 1 == 3, "arithmetic is broken"
'''


def test_each_gpu_test_runs_in_its_own_process(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: toy\n")
    (tmp_path / "test_toy_gpu.py").write_text(TOY_TESTS)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PARENT_PID": "0"}
    env.pop("LAB_PYTEST_CHILD", None)
    # PARENT_PID is filled in by a tiny wrapper so the children can compare against the parent's pid
    code = ("import os, sys, pytest; os.environ['PARENT_PID'] = str(os.getpid()); "
            "sys.exit(pytest.main(['-p', 'tests.gpu_isolation', '-m', 'gpu', '-rA', '-p', 'no:cacheprovider', "
            "'test_toy_gpu.py']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr  # one test fails on purpose
    assert "2 passed, 1 failed, 1 skipped" in out.strip().splitlines()[-1] or \
        "1 failed, 2 passed, 1 skipped" in out.strip().splitlines()[-1], out
    assert "PASSED test_toy_gpu.py::test_second_does_not_see_it" in out
    assert "no widget here" in out and "arithmetic is broken" in out
