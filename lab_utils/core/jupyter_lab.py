"""JupyterLab as `make lab` starts it, in one place: the command line, and a headless server for tests.

`make lab` runs `python -m scripts.jupyter_lab [jupyter lab args]` (which adds the token guard) on
lab_command(): the repo as the server root,
opening on notebooks/, with the app settings in env/jupyterlab/ (overrides.json: no "notified about
official Jupyter news?" popup and no update check on first start; a user's own settings still win).
The browser test and `make screenshots` start the very same command headless (LabServer): loopback,
a free port, a token, and a fresh user (settings, workspaces, runtime files under a temporary folder)
who never autosaves, so the repo's notebooks are left as they are.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from lab_utils.core.paths import REPO_ROOT

SETTINGS_DIR = REPO_ROOT / "env" / "jupyterlab"  # overrides.json: defaults for every user of this lab
DEFAULT_URL = "/lab/tree/notebooks"
STARTUP_TIMEOUT_S = 180  # a few seconds on a quiet machine; a shared one can be much slower


def lab_command(extra=()) -> list[str]:
    """`jupyter lab` on this interpreter, as `make lab` runs it; `extra` are jupyter lab's own options."""
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={REPO_ROOT}",
           f"--LabApp.default_url={DEFAULT_URL}", f"--LabApp.app_settings_dir={SETTINGS_DIR}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")  # AutoDL, Colab and containers run as root, which Jupyter refuses without it
    return cmd + list(extra)


def lab_environment(base: dict | None = None) -> dict:
    """The server's environment (its kernels inherit it): the repo importable from any notebook folder."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """`lab_command()` headless on 127.0.0.1 with a token and a fresh user under `home`; REST calls against it."""

    def __init__(self, home: Path, env: dict | None = None):
        home = Path(home)
        home.mkdir(parents=True, exist_ok=True)
        self.port, self.token = free_port(), uuid.uuid4().hex
        self.base = f"http://127.0.0.1:{self.port}"
        # A first-time user: no settings or open tabs remembered from anyone's earlier sessions
        env = {**lab_environment(env), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
               "JUPYTERLAB_SETTINGS_DIR": str(home / "user-settings"),
               "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
        # ... who never autosaves: the notebooks open from the repo itself, and a test or screenshot run that
        # edits and runs one must leave the file as it was
        docmanager = home / "user-settings" / "@jupyterlab" / "docmanager-extension" / "plugin.jupyterlab-settings"
        docmanager.parent.mkdir(parents=True, exist_ok=True)
        docmanager.write_text(json.dumps({"autosave": False}), encoding="utf-8")
        cmd = lab_command(["--no-browser", "--ip=127.0.0.1", f"--port={self.port}", "--ServerApp.port_retries=0",
                           f"--IdentityProvider.token={self.token}"])
        self.log_path = home / "server.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115  (open while the server runs; stop() closes it)
        self.process = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def url(self, path: str = DEFAULT_URL) -> str:
        """A page of the lab with the token, as the link `jupyter lab` prints."""
        return f"{self.base}{path}?token={self.token}"

    def request(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method,
                                         headers={"Authorization": f"token {self.token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
            is_json = text and "json" in response.headers.get("Content-Type", "")
            return response.status, (json.loads(text) if is_json else text)

    def wait_until_ready(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.process.returncode}; see {self.log_path}")
            try:
                if self.request("GET", "/api/status")[0] == 200:
                    return self
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"jupyter lab not ready after {STARTUP_TIMEOUT_S} s; see {self.log_path}")

    def channels_url(self, kernel_id: str, session: str) -> str:
        return f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels?session_id={session}&token={self.token}"

    def stop(self):
        self.process.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def __enter__(self):
        return self.wait_until_ready()

    def __exit__(self, *exc):
        self.stop()
