"""Talk to what you trained: an interactive terminal chat with streaming output.

    python -m scripts.chat --target sft_alpaca/demo            # a finished run: base + its LoRA adapter
    python -m scripts.chat --target export/demo/merged         # a merged folder
    python -m scripts.chat --target export/demo/demo-f16.gguf  # a GGUF (llama-cpp-python if installed)
    echo "What is 2+3?" | python -m scripts.chat --target sft_alpaca/demo   # one answer per input line
    python -m scripts.chat --server http://127.0.0.1:8000/v1   # a server started by scripts/serve.py

Type a message and press Enter; `/reset` forgets the conversation, `/exit` (or
Ctrl-D / end of input) quits. Decoding: greedy when temperature is 0.
"""

import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from lab_utils.core.config import run_cli
from lab_utils.core.paths import output_dir
from lab_utils.core.errors import LabError


@dataclass(kw_only=True)
class Params:
    target: str = ""  # run dir, merged folder, or .gguf file (absolute, or relative to $LAB_OUTPUT_DIR)
    server: str = ""  # instead: an OpenAI-compatible server's URL (scripts/serve.py); its key from $LAB_API_KEY
    model: str = ""  # with --server: the served model's name ("" = the last one it lists: the adapter)
    system_prompt: str = ""  # "" = the run's own system prompt, else the model's default
    max_new_tokens: int = 256  # longest answer, in tokens
    temperature: float = 0.0  # 0 = greedy (the same answer every time); higher = more varied
    top_p: float = 0.9  # nucleus sampling: sample among the likeliest tokens holding this much probability


class ChatError(LabError, ValueError):
    """The target cannot be chatted with; the message says why."""


def resolve_target(target: str) -> Path:
    if not target:
        raise ChatError("set --target to a finished run, a merged model folder or a .gguf file")
    path = Path(target).expanduser()
    path = path if path.exists() or path.is_absolute() else output_dir() / path
    if not path.exists():
        raise ChatError(
            f"'{path}' does not exist (a run dir, a merged folder or a .gguf file; relative to $LAB_OUTPUT_DIR)"
        )
    return path


class HFChat:
    """transformers model (+ optional LoRA adapter) with streamed generation."""

    def __init__(self, path: Path, p: Params):
        from transformers import AutoModelForCausalLM

        from lab_utils.models.gguf_reading import load_gguf_model
        from lab_utils.models.registry import load_tokenizer

        self.p = p
        if path.suffix == ".gguf":
            tokenizer_dir = path.parent / "merged"  # the export layout: reading a GGUF's vocabulary in Python is slow
            self.tokenizer = load_tokenizer(str(tokenizer_dir if tokenizer_dir.is_dir() else path.parent))
            self.model = load_gguf_model(path)
            self.system = None
        elif (path / "config.json").exists():
            self.tokenizer, self.model, self.system = (
                load_tokenizer(str(path)),
                AutoModelForCausalLM.from_pretrained(path),
                None,
            )
        else:
            from lab_utils.evaluation.evaluate import load_adapters
            from lab_utils.export.merge import locate_adapter

            self.model, self.tokenizer = load_adapters({"tuned": path})
            self.system = locate_adapter(path).system_prompt
        self.model.eval()

    def stream(self, messages: list[dict]):
        from transformers import TextIteratorStreamer

        from lab_utils.models.chat import render, whole_characters_stream

        text = render(self.tokenizer, messages, add_generation_prompt=True)
        inputs = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sampling = (
            {"do_sample": True, "temperature": self.p.temperature, "top_p": self.p.top_p}
            if self.p.temperature > 0
            else {"do_sample": False}
        )
        kwargs = dict(
            **inputs,
            streamer=streamer,
            max_new_tokens=self.p.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            **sampling,
        )
        worker = threading.Thread(target=self.model.generate, kwargs=kwargs)
        worker.start()
        yield from whole_characters_stream(streamer)
        worker.join()


class LlamaCppChat:
    """A GGUF through llama-cpp-python (the same runtime as Ollama/llama.cpp)."""

    def __init__(self, path: Path, p: Params):
        from llama_cpp import Llama

        self.p, self.system = p, None
        self.llm = Llama(model_path=str(path), n_ctx=2048, verbose=False)

    def stream(self, messages: list[dict]):
        chunks = self.llm.create_chat_completion(
            messages=messages,
            max_tokens=self.p.max_new_tokens,
            temperature=self.p.temperature,
            top_p=self.p.top_p,
            stream=True,
        )
        for chunk in chunks:
            yield chunk["choices"][0]["delta"].get("content", "")


class ServerChat:
    """An OpenAI-compatible server (vLLM's, started by scripts/serve.py), streamed through the openai client."""

    def __init__(self, p: Params):
        import os

        from openai import OpenAI

        self.p, self.system = p, None
        self.client = OpenAI(base_url=p.server, api_key=os.environ.get("LAB_API_KEY") or "unused")
        self.model = p.model or self.client.models.list().data[-1].id  # LoRA modules are listed after the base

    def stream(self, messages: list[dict]):
        chunks = self.client.chat.completions.create(
            model=self.model,
            messages=messages,
            stream=True,
            max_tokens=self.p.max_new_tokens,
            temperature=self.p.temperature,
            top_p=self.p.top_p,
        )
        for chunk in chunks:
            if chunk.choices:
                yield chunk.choices[0].delta.content or ""


def open_chat(p: Params):
    import importlib.util

    if p.server:
        return ServerChat(p)
    path = resolve_target(p.target)
    if path.suffix == ".gguf" and importlib.util.find_spec("llama_cpp") is not None:
        return LlamaCppChat(path, p)
    return HFChat(path, p)


def chat_loop(chat, p: Params, lines, write=sys.stdout.write) -> list[dict]:
    """Read user lines, stream each answer; returns the conversation (for tests and logs)."""
    system = p.system_prompt or chat.system
    history = [{"role": "system", "content": system}] if system else []
    for line in lines:
        message = line.strip()
        if not message:
            continue
        if message == "/exit":
            break
        if message == "/reset":
            history = history[:1] if system else []
            write("[conversation reset]\n")
            continue
        history.append({"role": "user", "content": message})
        write("assistant> ")
        answer = "".join(piece for piece in _echo(chat.stream(history), write))
        write("\n")
        history.append({"role": "assistant", "content": answer.strip()})
    return history


def _echo(pieces, write):
    for piece in pieces:
        write(piece)
        sys.stdout.flush()
        yield piece


def stdin_lines():
    """The user's lines from the terminal (with a prompt) or a pipe (one answer per line)."""
    interactive = sys.stdin.isatty()
    if interactive:
        print("chat ready: /reset forgets, /exit quits")
    while True:
        if interactive:
            sys.stdout.write("you> ")
            sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            return
        yield line


def run(p: Params) -> list[dict]:
    return chat_loop(open_chat(p), p, stdin_lines())


def main(argv=None):
    return run_cli(run, Params, argv, description=__doc__)


if __name__ == "__main__":
    main()
