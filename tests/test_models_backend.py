import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

from lab_utils import backend as backend_mod
from lab_utils.models import ModelNotFound, lora_target_modules, resolve_model

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=1000)
CONFIGS = {
    "gpt2": GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=1000),
    "llama": LlamaConfig(**TINY),
    "qwen2": Qwen2Config(**TINY),
    "mistral": MistralConfig(**TINY),
}


@pytest.mark.parametrize("arch", sorted(CONFIGS))
@pytest.mark.parametrize("include_mlp", [False, True])
def test_lora_targets_exist_in_each_architecture(arch, include_mlp):
    config = CONFIGS[arch]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = lora_target_modules(config, include_mlp=include_mlp)
    assert set(targets) <= leaf_names, f"{arch}: {set(targets) - leaf_names} missing"
    expected = {"gpt2": {"c_attn", "c_proj"}, "llama": {"q_proj", "k_proj", "v_proj", "o_proj"}}
    assert expected["gpt2" if arch == "gpt2" else "llama"] <= set(targets)
    assert ("gate_proj" in targets or "c_fc" in targets) == include_mlp


def test_unknown_architecture_falls_back_to_linear_layers():
    config = AutoConfig.for_model("opt", hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2,
                                  vocab_size=100, word_embed_proj_dim=32)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    targets = lora_target_modules(model)
    assert {"q_proj", "v_proj", "fc1"} <= set(targets) and "lm_head" not in targets


def test_embedded_model_resolves_offline(embedded_model_dir, tokenizer):
    assert resolve_model("smollm2-135m") == embedded_model_dir
    config = AutoConfig.from_pretrained(embedded_model_dir)
    assert config.model_type == "llama" and not hasattr(config, "quantization_config")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token != tokenizer.eos_token
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)


def test_model_names(tmp_path):
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    with pytest.raises(ModelNotFound, match="registry name"):
        resolve_model("no-such-model")


def test_backend_on_cpu_is_hf_with_a_reason(monkeypatch):
    chosen = backend_mod.choose_backend()
    assert (chosen.name, chosen.device) == ("hf", "cpu") and "CUDA" in chosen.reason
    monkeypatch.setenv("LAB_BACKEND", "hf")
    assert backend_mod.choose_backend().reason == "forced: backend=hf"
    monkeypatch.setenv("LAB_BACKEND", "unsloth")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        backend_mod.choose_backend()
    monkeypatch.setenv("LAB_BACKEND", "tensorflow")
    with pytest.raises(ValueError, match="expected"):
        backend_mod.choose_backend()


def test_choosing_a_backend_on_cpu_imports_neither_unsloth_nor_vllm():
    code = ("import sys; from lab_utils.backend import get_backend; get_backend(); "
            "import scripts.sft_alpaca; print(sorted(m for m in ('unsloth', 'vllm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "backend: hf on cpu" in out.stdout


def test_hf_backend_after_unsloth_was_imported_stops_with_one_line_saying_restart(tmp_path):
    # unsloth cannot be installed without CUDA, so the child process puts a stand-in module object under
    # sys.modules["unsloth"]: the guard only reads sys.modules, and that entry is what `import unsloth`
    # leaves behind. Then the real CLI is asked for backend=hf, as a notebook user switching backends would.
    code = ("import sys, types; sys.modules['unsloth'] = types.ModuleType('unsloth'); "
            "from scripts import sft_alpaca; "
            "sft_alpaca.main(['--backend', 'hf', '--max_steps', '1', '--run_name', 'mixed'])")
    env = {**os.environ, "LAB_OUTPUT_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1
    error = done.stderr.strip().splitlines()
    assert len(error) == 1 and "Unsloth already patched transformers in this process" in error[0]
    assert "restart the kernel/process to use backend=hf" in error[0] and "Traceback" not in done.stderr
    # auto resolves to hf here (no CUDA): refused as well; in a fresh process the same call is fine
    with pytest.raises(backend_mod.UnslothAlreadyImported):
        sys.modules["unsloth"] = object()
        try:
            backend_mod.choose_backend()
        finally:
            del sys.modules["unsloth"]
    assert backend_mod.choose_backend("hf").name == "hf"
