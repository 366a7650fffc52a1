import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

from lab_utils.core import backend as backend_mod
from lab_utils.models.registry import ModelNotFound, lora_target_modules, resolve_model

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


def test_a_cache_made_by_older_code_is_upgraded_in_place(embedded_model_dir, tmp_path, monkeypatch, capsys):
    """A version-1 cache (tokenizer.json as the GGUF loader wrote it, no version marker) is
    repaired on first use, without converting the GGUF again; afterwards it is left alone."""
    import json

    from lab_utils.models import registry as models
    from lab_utils.models.registry import (EMBEDDED_CACHE_MARKER, EMBEDDED_CACHE_VERSION, embedded_cache_version,
                                           load_tokenizer)

    source = Path(embedded_model_dir)
    old = tmp_path / "models" / models.EMBEDDED_CACHE_NAME
    old.mkdir(parents=True)
    for item in source.iterdir():  # the weights are linked, not copied: 540 MB
        if item.name not in ("tokenizer.json", EMBEDDED_CACHE_MARKER):
            (old / item.name).symlink_to(item)
    tokenizer_json = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer_json["model"]["byte_fallback"] = True  # what the GGUF loader leaves, and version 1 kept
    tokenizer_json["decoder"] = {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]}
    (old / "tokenizer.json").write_text(json.dumps(tokenizer_json), encoding="utf-8")
    weights_before = (old / "model.safetensors").lstat().st_mtime_ns
    monkeypatch.setenv("LAB_MODELS_DIR", str(tmp_path / "models"))
    assert embedded_cache_version(old) == 1

    assert resolve_model("smollm2-135m") == str(old)
    repaired = json.loads((old / "tokenizer.json").read_text(encoding="utf-8"))
    assert repaired["model"]["byte_fallback"] is False and repaired["decoder"]["type"] == "ByteLevel"
    assert embedded_cache_version(old) == EMBEDDED_CACHE_VERSION
    assert (old / "model.safetensors").lstat().st_mtime_ns == weights_before  # not converted again
    assert "converting" not in capsys.readouterr().out
    text = "Hello wörld 123 <|im_end|> ✓\n  x"
    upgraded, original = load_tokenizer(str(old)), load_tokenizer(str(source))
    assert upgraded(text)["input_ids"] == original(text)["input_ids"]
    assert upgraded.decode(original(text)["input_ids"]) == text
    (old / "tokenizer.json").write_text(json.dumps(tokenizer_json), encoding="utf-8")
    resolve_model("smollm2-135m")  # the marker says version 2: nothing is read or rewritten
    assert json.loads((old / "tokenizer.json").read_text())["model"]["byte_fallback"] is True
    assert not list(old.parent.glob("*.partial")) and not list(old.glob("*.partial"))


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
    code = ("import sys; from lab_utils.core.backend import get_backend; get_backend(); "
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
    assert not (tmp_path / "sft_alpaca" / "mixed").exists()  # refused before the run folder was made
    # auto resolves to hf here (no CUDA): refused as well; in a fresh process the same call is fine
    with pytest.raises(backend_mod.UnslothAlreadyImported):
        sys.modules["unsloth"] = object()
        try:
            backend_mod.choose_backend()
        finally:
            del sys.modules["unsloth"]
    assert backend_mod.choose_backend("hf").name == "hf"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("experiment", ["sft_alpaca", "grpo_gsm8k", "preference"])
def test_a_backend_the_machine_cannot_run_is_refused_before_the_run_folder_exists(experiment):
    import importlib

    from lab_utils.core.paths import output_dir

    script = importlib.import_module(f"scripts.{experiment}")
    with pytest.raises(RuntimeError, match="backend=unsloth needs a CUDA GPU"):
        script.run(script.Params(backend="unsloth", run_name="no_gpu"))
    assert not (output_dir() / experiment / "no_gpu").exists()
