"""Serve a fine-tune with vLLM's OpenAI-compatible server, on a GPU box or a CPU (make setup-vllm), and how to call it.

    python -m scripts.serve --target export/demo/merged          # a merged model folder
    python -m scripts.serve --target sft_alpaca/demo             # base model + the run's LoRA adapter
    python -m scripts.serve --target sft_alpaca/demo --start true   # start it (Ctrl-C stops it)
    LAB_API_KEY=... python -m scripts.serve --target sft_alpaca/demo --host 0.0.0.0 --start true
    python -m scripts.chat --server http://127.0.0.1:8000/v1     # talk to it

Prints the `vllm serve` command and a Python client snippet. A merged folder is
served as it is; a run dir is served as its base model with `--enable-lora
--lora-modules <name>=<adapter>`, so several adapters can share one base.

Security: the server listens on 127.0.0.1 (this machine only) unless --host says
otherwise, and any other address needs an API key (--api_key, else $LAB_API_KEY):
without one it refuses to start. With a key, vLLM answers 401 to requests that do
not send it (`Authorization: Bearer <key>`, the openai client's api_key). The key
reaches vLLM through VLLM_API_KEY, not the command line, so `ps` does not show it.
On a CPU the server keeps its KV cache to VLLM_CPU_KVCACHE_SPACE GiB (1 unless set;
without it vLLM would reserve 92% of the RAM) and runs in float32, as CPU training does.
"""

import json
import os
import shlex
import sys
from dataclasses import dataclass

from lab_utils.core.backend import cuda_available, has_package
from lab_utils.core.config import run_cli
from lab_utils.core.errors import ParamError
from lab_utils.export.merge import locate_adapter
from lab_utils.models.registry import resolve_model
from lab_utils.training.vllm_engine import SETUP_HINT, lora_rank_slot, vllm_build
from scripts.chat import resolve_target

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(kw_only=True)
class Params:
    target: str = ""  # merged model folder, or a finished run dir (base + LoRA)
    name: str = ""  # the model name clients ask for ("" = the folder's name)
    host: str = "127.0.0.1"  # this machine only; any other address needs an API key
    port: int = 8000  # the port the OpenAI-compatible server listens on
    api_key: str = ""  # clients must send it; "" = $LAB_API_KEY (required when host is not 127.0.0.1)
    max_model_len: int = 4096  # longest prompt + answer in tokens (vLLM sizes its KV cache by it)
    gpu_memory_utilization: float = 0.9  # vLLM's share of the GPU (CUDA only)
    start: bool = False  # run the command instead of printing it


class ServeError(ParamError):
    """The server must not start as asked; the message says why and what to do."""


def api_key(p: Params) -> str:
    return p.api_key or os.environ.get("LAB_API_KEY", "")


def check_exposure(p: Params) -> None:
    if p.host not in LOOPBACK and not api_key(p):
        raise ServeError(f"--host {p.host} would let anyone on the network use the model: set --api_key or "
                         "LAB_API_KEY (clients then send it), or keep --host 127.0.0.1")


def serve_command(p: Params) -> tuple[list[str], str]:
    """(the vllm serve argv, the model name clients use)."""
    path = resolve_target(p.target)
    name = p.name or path.name
    common = ["--host", p.host, "--port", str(p.port), "--max-model-len", str(p.max_model_len)]
    if cuda_available():
        common += ["--gpu-memory-utilization", str(p.gpu_memory_utilization)]
    else:
        common += ["--dtype", "float32"]  # as CPU training computes
    if (path / "config.json").exists():
        return ["vllm", "serve", str(path), "--served-model-name", name, *common], name
    trained = locate_adapter(path)
    rank = json.loads((trained.adapter_dir / "adapter_config.json").read_text())["r"]
    command = ["vllm", "serve", str(resolve_model(trained.base_model)), "--enable-lora",
               "--lora-modules", f"{name}={trained.adapter_dir}", "--max-lora-rank", str(lora_rank_slot(rank)), *common]
    return command, name


def launch_argv(command: list[str]) -> list[str]:
    """The argv that starts `vllm serve MODEL ...` with this Python's vLLM. vllm-cpu 0.32's `vllm` command
    cannot start (it asks for the version of a distribution named "vllm", which vllm-cpu is not), so the
    server module is run directly: the same server and arguments, the model as --model."""
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", *command[2:]]


def client_snippet(p: Params, name: str) -> str:
    host = "127.0.0.1" if p.host in ("0.0.0.0", "::") else p.host
    key = 'os.environ["LAB_API_KEY"]' if api_key(p) else '"unused"'
    return f'''import os
from openai import OpenAI
client = OpenAI(base_url="http://{host}:{p.port}/v1", api_key={key})
reply = client.chat.completions.create(model="{name}", messages=[{{"role": "user", "content": "Hello!"}}])
print(reply.choices[0].message.content)'''


def server_environment(p: Params) -> dict:
    """The server's environment: the API key (VLLM_API_KEY), and on a CPU a KV cache it can have."""
    env = dict(os.environ)
    if api_key(p):
        env["VLLM_API_KEY"] = api_key(p)
    if not cuda_available():
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


def run(p: Params) -> list[str]:
    check_exposure(p)
    command, name = serve_command(p)
    cpu_build = (vllm_build() or "").startswith("vllm-cpu")
    print(f"# start the server (`{SETUP_HINT}` installs vLLM{'; the key goes in VLLM_API_KEY' if api_key(p) else ''}):")
    print(shlex.join(launch_argv(command) if cpu_build else command))
    print("\n# then, from Python:")
    print(client_snippet(p, name), flush=True)
    if p.start:
        if not has_package("vllm"):
            raise ServeError(f"--start needs vLLM: run `{SETUP_HINT}`")
        os.execve(sys.executable, launch_argv(command), server_environment(p))  # the server replaces this process
    return command


def main(argv=None):
    return run_cli(run, Params, argv, description=__doc__)


if __name__ == "__main__":
    main()
