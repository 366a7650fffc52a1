"""Serve a fine-tune with vLLM's OpenAI-compatible server (on a GPU box), and how to call it.

    python -m scripts.serve --target export/demo/merged          # a merged model folder
    python -m scripts.serve --target sft_alpaca/demo             # base model + the run's LoRA adapter
    python -m scripts.serve --target sft_alpaca/demo --start true   # start it (needs CUDA and vllm)

Prints the `vllm serve` command and a Python client snippet. A merged folder is
served as it is; a run dir is served as its base model with `--enable-lora
--lora-modules <name>=<adapter>`, so several adapters can share one base.
"""

import json
import os
import shlex
from dataclasses import dataclass

from lab_utils.core.backend import vllm_available
from lab_utils.core.config import run_cli
from lab_utils.export.merge import locate_adapter
from lab_utils.models.registry import resolve_model
from scripts.chat import resolve_target


@dataclass(kw_only=True)
class Params:
    target: str = ""  # merged model folder, or a finished run dir (base + LoRA)
    name: str = ""  # the model name clients ask for ("" = the folder's name)
    host: str = "127.0.0.1"
    port: int = 8000
    max_model_len: int = 4096
    gpu_memory_utilization: float = 0.9
    start: bool = False  # run the command instead of printing it


def serve_command(p: Params) -> tuple[list[str], str]:
    """(the vllm serve argv, the model name clients use)."""
    path = resolve_target(p.target)
    name = p.name or path.name
    common = ["--host", p.host, "--port", str(p.port), "--max-model-len", str(p.max_model_len),
              "--gpu-memory-utilization", str(p.gpu_memory_utilization)]
    if (path / "config.json").exists():
        return ["vllm", "serve", str(path), "--served-model-name", name, *common], name
    trained = locate_adapter(path)
    rank = json.loads((trained.adapter_dir / "adapter_config.json").read_text())["r"]
    command = ["vllm", "serve", resolve_model(trained.base_model), "--enable-lora",
               "--lora-modules", f"{name}={trained.adapter_dir}", "--max-lora-rank", str(max(rank, 8)), *common]
    return command, name


def client_snippet(p: Params, name: str) -> str:
    return f'''from openai import OpenAI
client = OpenAI(base_url="http://{p.host}:{p.port}/v1", api_key="unused")
reply = client.chat.completions.create(model="{name}", messages=[{{"role": "user", "content": "Hello!"}}])
print(reply.choices[0].message.content)'''


def run(p: Params) -> list[str]:
    command, name = serve_command(p)
    print("# start the server (GPU box, `pip install -r requirements-gpu.txt`):")
    print(shlex.join(command))
    print("\n# then, from Python:")
    print(client_snippet(p, name))
    if p.start:
        if not vllm_available():
            raise RuntimeError("--start needs a CUDA GPU and vllm installed; run the command above on a GPU box")
        os.execvp(command[0], command)  # replace this process: Ctrl-C stops the server
    return command


def main(argv=None):
    return run_cli(run, Params, argv, description=__doc__)


if __name__ == "__main__":
    main()
