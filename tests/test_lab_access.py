"""`make lab` beyond localhost: never without a token or a password (scripts/jupyter_lab.py)."""

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


from lab_utils.core.paths import REPO_ROOT
from scripts.jupyter_lab import jupyter_arguments

STARTUP_TIMEOUT_S = 180  # a few seconds on a quiet machine; this one is shared


def token_of(args: list[str]) -> str | None:
    found = [a.split("=", 1)[1] for a in args if a.startswith("--IdentityProvider.token=")]
    return found[-1] if found else None


def test_make_lab_starts_jupyter_only_through_the_guard():
    # Under `make test` this make is nested (MAKELEVEL=1): it would print "Entering directory" lines and,
    # with a stale setup stamp, setup's recipe too; the lab's own command is the line that starts Python.
    shown = subprocess.run(["make", "-n", "--no-print-directory", "lab", "LAB_ARGS=--ip 0.0.0.0 --port 6006"],
                           cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    started = [line for line in shown.splitlines() if "-m scripts.jupyter_lab " in line]
    assert len(started) == 1 and started[0].rstrip().endswith("--ip 0.0.0.0 --port 6006"), shown
    assert "bin/jupyter lab" not in shown


def test_an_empty_token_beyond_localhost_is_refused_in_one_line():
    for args in (["--ip", "0.0.0.0", "--ServerApp.token="], ["--ip=", "--IdentityProvider.token=''"],
                 ["--ServerApp.ip=10.0.0.5", "--NotebookApp.token", ""]):
        done = subprocess.run([sys.executable, "-m", "scripts.jupyter_lab", *args], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode != 0 and done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: make lab binds to") and "token" in lines[0], args


def test_beyond_localhost_a_token_is_always_there():
    opened = jupyter_arguments(["--ip", "0.0.0.0", "--port", "6006"], env={})
    assert opened[:4] == ["--ip", "0.0.0.0", "--port", "6006"] and len(token_of(opened)) >= 32
    assert token_of(jupyter_arguments(["--ip", "0.0.0.0"], env={})) != token_of(opened)  # random each time
    assert token_of(jupyter_arguments(["--ip=0.0.0.0", "--IdentityProvider.token=mine"], env={})) == "mine"
    assert token_of(jupyter_arguments(["--ip", "0.0.0.0"], env={"JUPYTER_TOKEN": "from-env"})) is None
    with_password = jupyter_arguments(["--ip", "::", "--ServerApp.token=", "--PasswordIdentityProvider.hashed_password",
                                       "argon2:..."], env={})
    assert token_of(with_password) is None  # the password guards it; no token added
    # localhost: as given, the address pinned so a config file cannot widen it
    assert jupyter_arguments([], env={}) == ["--ServerApp.ip=127.0.0.1"]
    assert jupyter_arguments(["--ip=localhost", "--ServerApp.token="], env={}) == [
        "--ip=localhost",
        "--ServerApp.token=",
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_config_that_turns_tokens_off_cannot_open_the_server(tmp_path):
    """A cloud image's jupyter config with `c.ServerApp.token = ''`: bound to 0.0.0.0, the API still says 403."""
    (tmp_path / "jupyter_server_config.py").write_text("c.ServerApp.token = ''\nc.IdentityProvider.token = ''\n")
    port = free_port()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "PYTHONPATH": str(REPO_ROOT),
    }
    env.pop("JUPYTER_TOKEN", None)
    # the repo as root and --allow-root come from make lab's own command line (lab_utils.core.jupyter_lab)
    args = ["--ip", "0.0.0.0", f"--port={port}", "--ServerApp.port_retries=0", "--no-browser"]
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "scripts.jupyter_lab", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "jupyter lab did not answer"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/kernels", timeout=10).close()
                status = 200
            except urllib.error.HTTPError as err:
                status = err.code
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
                continue
            break
        assert status == 403  # no token, no kernels: the forced random token guards it
    finally:
        server.terminate()
        server.wait(timeout=60)
