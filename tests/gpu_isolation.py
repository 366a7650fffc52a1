"""pytest plugin: every GPU test runs in a fresh Python process of its own.

Why: `import unsloth` patches transformers/TRL/peft for the whole process, for good, and
CUDA memory peaks are per process. On an H200 `pytest -m gpu tests/test_gpu.py` failed an
hf-backend test (`Expected input batch_size (512) to match target batch_size (90)`)
only because an Unsloth test had run before it in the same process. With this plugin the
parent pytest never runs a `gpu`-marked test itself: it runs `python -m pytest <nodeid>`
in a child (fixtures included) and reports the child's outcome, so no backend can leak
into another test, whatever order or selection the tests run in.

tests/conftest.py imports the hook; a child is marked by LAB_PYTEST_CHILD=1 and runs its
one test normally. CPU tests (no `gpu` mark) are untouched.
"""

import os
import re
import subprocess
import sys
import time

import pytest
from _pytest.reports import TestReport

CHILD_FLAG = "LAB_PYTEST_CHILD"
CHILD_TIMEOUT_S = int(os.environ.get("LAB_GPU_TEST_TIMEOUT", "1800"))


def child_outcome(returncode: int, output: str) -> tuple[str, str]:
    """(passed | skipped | failed, why) from a one-test child pytest run."""
    summary = (output.strip().splitlines() or [""])[-1]
    if returncode == 0 and re.search(r"\b1 passed\b", summary):
        return "passed", ""
    if returncode == 0 and re.search(r"\b1 skipped\b", summary):
        reason = re.findall(r"^SKIPPED \[\d+\] [^:]+:\d+: (.*)$", output, flags=re.M)
        return "skipped", reason[-1] if reason else "skipped in the child process"
    if returncode == 5:
        return "failed", "the child pytest collected no test (was it deselected there?)"
    return "failed", f"child pytest exited {returncode}:\n" + "\n".join(output.strip().splitlines()[-60:])


def run_in_child(item) -> tuple[str, str, str, float]:
    command = [sys.executable, "-m", "pytest", item.nodeid, "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
               "--no-header"]
    env = {**os.environ, CHILD_FLAG: "1"}
    started = time.time()
    try:
        done = subprocess.run(command, cwd=str(item.config.rootpath), env=env, capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT_S)
        output = done.stdout + done.stderr
        outcome, why = child_outcome(done.returncode, done.stdout)
    except subprocess.TimeoutExpired as err:
        output = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        outcome, why = "failed", f"timed out after {CHILD_TIMEOUT_S} s (LAB_GPU_TEST_TIMEOUT)"
    return outcome, why, output, time.time() - started


def report(item, when: str, outcome: str = "passed", longrepr=None, sections=(), duration: float = 0.0):
    return TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, outcome, longrepr, when,
                      sections=sections, duration=duration)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    if item.get_closest_marker("gpu") is None or os.environ.get(CHILD_FLAG):
        return None  # CPU tests, and the one test inside a child, run as usual
    hook = item.ihook
    hook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    outcome, why, output, seconds = run_in_child(item)
    if outcome == "skipped":
        longrepr = (str(item.path), (item.location[1] or 0) + 1, f"Skipped: {why}")
    else:
        longrepr = why or None
    sections = [("Captured output (own process)", output[-20000:])]
    for when, result in (("setup", "passed"), ("call", outcome), ("teardown", "passed")):
        is_call = when == "call"
        hook.pytest_runtest_logreport(report=report(item, when, result, longrepr if is_call else None,
                                                    sections if is_call else (), seconds if is_call else 0.0))
    hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
