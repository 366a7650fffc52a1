"""`make lab`: JupyterLab, never reachable from the network without a token or a password.

    python -m scripts.jupyter_lab [jupyter lab arguments]     # what `make lab LAB_ARGS="..."` runs

On a rented box (AutoDL, Colab) the port is forwarded to the internet, and a JupyterLab
without a token there is a shell for anyone who finds it. So, when the server binds beyond
this machine (--ip other than 127.0.0.1 / localhost / ::1):
  - a token or a password given on the command line (or JUPYTER_TOKEN) is used as given;
  - with neither, a random token is passed explicitly, so a jupyter config file that turns
    tokens off (`c.ServerApp.token = ''`, common in cloud images) cannot open the server;
  - a token explicitly set empty with no password is refused, in one line.
Without --ip the address 127.0.0.1 is passed explicitly, so what was checked is what binds.
"""

import os
import secrets
import sys

IP_OPTIONS = ("--ip", "--ServerApp.ip", "--NotebookApp.ip")
TOKEN_OPTIONS = ("--IdentityProvider.token", "--ServerApp.token", "--NotebookApp.token")
PASSWORD_OPTIONS = ("--PasswordIdentityProvider.hashed_password", "--ServerApp.password", "--NotebookApp.password")


def option(args: list[str], names: tuple) -> str | None:
    """The value the last of `names` is given on the command line (`--name=value` or `--name value`), else None."""
    value = None
    for i, arg in enumerate(args):
        name, eq, given = arg.partition("=")
        if name in names:
            value = given.strip("'\"") if eq else (args[i + 1] if i + 1 < len(args) else "")
    return value


def is_local(ip: str) -> bool:
    return ip in ("localhost", "::1") or ip.startswith("127.")


def jupyter_arguments(args: list[str], env=os.environ) -> list[str]:
    """The arguments `jupyter lab` gets: `args` plus the explicit address and, beyond localhost, a token.
    Raises SystemExit (one line) for a server open to the network with no token and no password."""
    ip = option(args, IP_OPTIONS)
    pinned = [] if ip is not None else ["--ServerApp.ip=127.0.0.1"]  # given twice, jupyter refuses to start
    ip = "127.0.0.1" if ip is None else ip
    if is_local(ip):
        return args + pinned
    token, password = option(args, TOKEN_OPTIONS), option(args, PASSWORD_OPTIONS)
    if password:
        return args + pinned
    if token == "":
        raise SystemExit(f"error: make lab binds to {ip or 'every address'}, beyond this machine, with the token "
                         "set empty and no password: anyone reaching the port gets a shell. Drop the empty token "
                         "(a random one is made), or set --PasswordIdentityProvider.hashed_password")
    if token is None and not env.get("JUPYTER_TOKEN"):
        pinned.append(f"--IdentityProvider.token={secrets.token_hex(24)}")  # shown in the URL jupyter prints
    return args + pinned


def main(argv=None):
    """Say where models, data and outputs go, then become `jupyter lab` (lab_utils.core.jupyter_lab's command)."""
    from lab_utils.core import paths
    from lab_utils.core.jupyter_lab import lab_command, lab_environment

    args = jupyter_arguments(list(sys.argv[1:] if argv is None else argv))
    print(f"[lab] models {paths.models_dir()} | data {paths.data_dir()} | outputs {paths.output_dir()}")
    cmd = lab_command(args)
    os.execve(cmd[0], cmd, lab_environment())


if __name__ == "__main__":
    main()
