"""vLLM for real (the CPU build on a CPU box): GRPO rollouts from the adapter being trained, greedy parity with HF,
one line for each failure (test_grpo's learning test learns through it where vLLM is installed). Skipped in one
line when vLLM is not installed."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from lab_utils.core.backend import Backend, has_package
from lab_utils.core.paths import REPO_ROOT, output_dir
from lab_utils.training.rollouts import choose_rollouts
from lab_utils.training.vllm_engine import EngineError, explain, lora_rank_slot, vllm_build
from scripts import grpo_gsm8k
from tests.test_evaluate_export import fake_finished_run
from tests.test_grpo import TINY as GRPO_TINY

needs_vllm = pytest.mark.skipif(not has_package("vllm"), reason="vLLM is not installed (make setup-vllm)")
CPU = Backend("hf", "test", "cpu")
# The mechanics run on the tiny random Llama (two 32-wide heads: vLLM's CPU attention takes 32 up). Greedy parity
# with HF needs the embedded SmolLM2: a random model's top logits are close enough for two kernels to tie-break apart.
TINY = {**GRPO_TINY, "rollouts": "vllm"}
QUESTIONS = ["What is 12 + 30?", "Name three primary colors.", "Write one sentence about the sea.",
             "What is the capital of France?"]


def test_missing_vllm_is_one_line_naming_make_setup_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what Python itself does for a package that is not there
    with pytest.raises(EngineError, match="make setup-vllm"):
        choose_rollouts("vllm", CPU)
    auto = choose_rollouts("auto", CPU)
    assert auto.engine == "hf" and "make setup-vllm" in auto.reason
    with pytest.raises(EngineError, match="make setup-vllm"):
        grpo_gsm8k.run(grpo_gsm8k.Params(**{**TINY, "run_name": "novllm"}))
    assert not (output_dir() / "grpo_gsm8k" / "novllm").exists()


def test_engine_errors_become_one_line_naming_the_fix():
    kv = ValueError("To serve at least one request with the model's max seq len (512), (0.02 GiB KV cache is "
                    "needed, which is larger than the available KV cache memory (0.0 GiB).")
    assert "VLLM_CPU_KVCACHE_SPACE" in explain(kv, "m") or "vllm_gpu_memory_utilization" in explain(kv, "m")
    arch = ValueError("Model architectures ['FooBarForCausalLM'] are not supported for now. Supported: ...")
    assert "rollouts: hf" in explain(arch, "m") and explain(RuntimeError("something else"), "m") is None
    assert [lora_rank_slot(r) for r in (4, 8, 12, 16, 64)] == [8, 8, 16, 16, 64]


@needs_vllm
def test_auto_picks_vllm_wherever_it_is_installed_and_says_so():
    chosen = choose_rollouts("auto", CPU)
    assert chosen.engine == "vllm" and chosen.lab_engine and vllm_build() in chosen.reason
    assert vllm_build().startswith(("vllm-cpu ", "vllm "))


@pytest.mark.vllm
@needs_vllm
def test_failed_engine_start_is_one_line_and_leaves_no_run_folder(tmp_path, tiny_lm_dir, monkeypatch):
    # an architecture vLLM does not know: the tiny model's files, its config renamed
    model = tmp_path / "foobar"
    model.mkdir()
    source = Path(tiny_lm_dir)
    for f in source.iterdir():
        if f.is_file() and f.name != "config.json":
            (model / f.name).symlink_to(f)
    config = json.loads((source / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "architectures": ["FooBarForCausalLM"]}))
    p = grpo_gsm8k.Params(**{**TINY, "run_name": "arch", "model": str(model)})
    with pytest.raises(EngineError, match="rollouts: hf"):
        grpo_gsm8k.run(p)
    # no room for the KV cache (0 GiB)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "0")
    with pytest.raises(EngineError, match="VLLM_CPU_KVCACHE_SPACE"):
        grpo_gsm8k.run(grpo_gsm8k.Params(**{**TINY, "run_name": "kv"}))
    assert not (output_dir() / "grpo_gsm8k").exists()


def hf_greedy(model, tokenizer, prompt_ids, max_new_tokens):
    with torch.no_grad():
        return [model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                               eos_token_id=tokenizer.eos_token_id)[0, len(ids):].tolist() for ids in prompt_ids]


@pytest.mark.vllm
@needs_vllm
def test_vllm_rollouts_train_with_the_adapter_published_at_each_step():
    p = grpo_gsm8k.Params(**{**TINY, "run_name": "vllm", "precision": "fp32", "save_steps": 2})
    metrics, run = grpo_gsm8k.run(p)["metrics"], output_dir() / "grpo_gsm8k" / "vllm"
    assert metrics["rollouts"] == "vllm" and metrics["global_step"] == 2
    assert metrics["vllm_adapters_published"] >= 2 + 2  # one per GRPO generation + the two adapter gradings
    history = json.loads((run / "history.json").read_text())
    assert [r["step"] for r in history if "reward" in r] == [1, 2]
    assert all(0 < r["completions/mean_length"] <= 16 for r in history if "reward" in r)
    assert (run / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.vllm
@needs_vllm
def test_a_published_adapter_gives_hfs_greedy_answers_token_for_token(tmp_path, embedded_model_dir, tokenizer):
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM
    from vllm import SamplingParams

    from lab_utils.models.registry import lora_target_modules
    from lab_utils.training.vllm_engine import start_engine

    # an adapter on every projection LoRA takes: publishing merges into the engine's packed qkv and gate_up weights
    every_projection = lora_target_modules(AutoConfig.from_pretrained(embedded_model_dir), include_mlp=True)
    run = fake_finished_run(tmp_path / "run", embedded_model_dir, 0, every_projection)
    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32).eval()
    tuned = PeftModel.from_pretrained(base, run / "adapter").eval()
    prompt_ids = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                                tokenize=True, return_dict=False) for q in QUESTIONS]
    engine = start_engine(str(embedded_model_dir), max_model_len=256, lora_rank=4, dtype="float32")
    try:  # the base model first: on a CPU, publishing merges the adapter into the engine's weights
        greedy = SamplingParams(temperature=0.0, max_tokens=24)
        served_base = [list(o.outputs[0].token_ids) for o in engine.generate(prompt_ids, greedy, base=True)]
        engine.publish(tuned)
        served = [list(o.outputs[0].token_ids) for o in engine.generate(prompt_ids, greedy)]
        with pytest.raises(RuntimeError, match="before the first publish"):
            engine.generate(prompt_ids, greedy, base=True)
    finally:
        engine.close()
    assert served == hf_greedy(tuned, tokenizer, prompt_ids, 24)
    with tuned.disable_adapter():
        assert served_base == hf_greedy(tuned, tokenizer, prompt_ids, 24)
    assert served != served_base  # the adapter changes the answers


def test_serve_off_loopback_without_a_key_refuses_in_one_line(tmp_path, embedded_model_dir, monkeypatch):
    run = fake_finished_run(tmp_path / "run", embedded_model_dir, 0)
    env = {k: v for k, v in os.environ.items() if k != "LAB_API_KEY"}
    done = subprocess.run([sys.executable, "-m", "scripts.serve", "--target", str(run), "--host", "0.0.0.0"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "LAB_API_KEY" in done.stderr and "Traceback" not in done.stderr
    from scripts import serve

    monkeypatch.setenv("LAB_API_KEY", "k")  # with a key it may listen elsewhere, and the key stays off argv
    command = serve.run(serve.Params(target=str(run), host="0.0.0.0"))
    assert "k" not in command and serve.server_environment(serve.Params(target=str(run)))["VLLM_API_KEY"] == "k"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, server, log, timeout: float = 1200) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited ({server.returncode}): {log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    pytest.fail(f"the server did not answer within {timeout} s: {log.read_text()[-3000:]}")


@pytest.mark.vllm
@needs_vllm
def test_serve_answers_as_the_adapter_does_and_rejects_requests_without_the_key(tmp_path, embedded_model_dir,
                                                                               tokenizer):
    from openai import AuthenticationError, OpenAI
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = fake_finished_run(tmp_path / "run", embedded_model_dir, 0)
    port, log = free_port(), tmp_path / "server.log"
    env = {**os.environ, "LAB_API_KEY": "secret-test-key", "PYTHONPATH": str(REPO_ROOT)}
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "scripts.serve", "--target", str(run), "--name", "tutor",
                                   "--port", str(port), "--max_model_len", "512", "--start", "true"],
                                  cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", server, log)
        question = [{"role": "user", "content": QUESTIONS[0]}]
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="secret-test-key")
        reply = client.chat.completions.create(model="tutor", messages=question, temperature=0.0, max_tokens=24)
        with pytest.raises(AuthenticationError):  # 401
            OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong").models.list()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=30)
        assert refused.value.code == 401
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32).eval()
    tuned = PeftModel.from_pretrained(base, run / "adapter").eval()
    ids = tokenizer.apply_chat_template(question, add_generation_prompt=True, tokenize=True, return_dict=False)
    answer = tokenizer.decode(hf_greedy(tuned, tokenizer, [ids], 24)[0], skip_special_tokens=True)
    assert reply.choices[0].message.content.strip() == answer.strip()
