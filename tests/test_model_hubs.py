"""Models from ModelScope: names, the $LAB_MODELS_DIR cache, and loading a cached model with the network absent."""

import socket
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from lab_utils.models import registry as models
from lab_utils.models.registry import ModelNotFound, modelscope_cache_dir, resolve_model, split_hub

MODEL_ID = "Qwen/Qwen2.5-1.5B-Instruct"


@pytest.fixture(scope="module")
def embedded_tokenizer():
    return models.load_tokenizer(resolve_model("smollm2-135m"))  # the real LAB_MODELS_DIR, before any test moves it


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_MODELS_DIR", str(tmp_path / "models"))
    for variable in ("LAB_MODEL_HUB", *models.OFFLINE_VARIABLES):
        monkeypatch.delenv(variable, raising=False)
    return tmp_path / "models"


@pytest.fixture
def no_network(monkeypatch):
    """No modelscope import and no socket connection: anything that tries fails loudly."""
    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise OSError(f"network is absent in this test (tried {address})")

    monkeypatch.setitem(sys.modules, "modelscope", None)  # `import modelscope` raises ImportError
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def cache_tiny_model(tokenizer, model_id: str = MODEL_ID):
    """A tiny Llama of real shape, saved where a ModelScope download of `model_id` lands."""
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=len(tokenizer))
    model = AutoModelForCausalLM.from_config(config)
    return models.save_model_folder(model, tokenizer, modelscope_cache_dir(model_id)), model


@pytest.mark.parametrize("offline", [None, "LAB_OFFLINE", "HF_HUB_OFFLINE"])
def test_cached_modelscope_model_loads_with_no_network_call(embedded_tokenizer, models_dir, no_network, monkeypatch,
                                                            offline):
    folder, original = cache_tiny_model(embedded_tokenizer)
    assert folder == models_dir / "modelscope" / "Qwen" / "Qwen2.5-1.5B-Instruct"
    if offline:
        monkeypatch.setenv(offline, "1")
    assert resolve_model(f"modelscope:{MODEL_ID}") == str(folder)
    monkeypatch.setenv("LAB_MODEL_HUB", "modelscope")
    assert resolve_model(MODEL_ID) == resolve_model("qwen2.5-1.5b") == str(folder)
    loaded = AutoModelForCausalLM.from_pretrained(resolve_model("qwen2.5-1.5b"))
    ids = torch.tensor([embedded_tokenizer("头疼怎么办")["input_ids"]])
    assert torch.equal(loaded(ids).logits, original(ids).logits)
    assert no_network == []  # nothing even tried to connect


def test_training_loads_the_cached_folder_through_resolve_model(embedded_tokenizer, models_dir, no_network,
                                                                monkeypatch):
    from scripts.sft_alpaca import Params
    from lab_utils.training.lora import load_lora_model

    folder, _ = cache_tiny_model(embedded_tokenizer)
    monkeypatch.setenv("LAB_OFFLINE", "1")
    model, tokenizer, backend = load_lora_model(Params(model="qwen2.5-1.5b-modelscope", backend="hf", lora_r=2))
    assert backend.name == "hf" and model.peft_config["default"].base_model_name_or_path == str(folder)
    assert tokenizer.chat_template == embedded_tokenizer.chat_template and no_network == []


def test_missing_model_offline_is_one_line_naming_the_folder(models_dir, no_network, monkeypatch):
    monkeypatch.setenv("LAB_OFFLINE", "1")
    with pytest.raises(ModelNotFound) as error:
        resolve_model(f"modelscope:{MODEL_ID}")
    message = str(error.value)
    assert str(modelscope_cache_dir(MODEL_ID)) in message and "LAB_OFFLINE=1" in message and "\n" not in message


def test_missing_model_without_the_package_says_how_to_install_it(models_dir, no_network):
    with pytest.raises(ModelNotFound, match=r"pip install modelscope==1\.40\.2$"):
        resolve_model(f"modelscope:{MODEL_ID}")


def test_a_half_downloaded_folder_is_not_taken_for_the_model(embedded_tokenizer, models_dir, no_network, monkeypatch):
    folder, _ = cache_tiny_model(embedded_tokenizer)
    (folder / "model.safetensors").unlink()  # config and tokenizer there, weights not (yet)
    monkeypatch.setenv("LAB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="not in the cache"):
        resolve_model(f"modelscope:{MODEL_ID}")


def test_hub_prefixes_and_the_default_hub(models_dir, monkeypatch):
    assert split_hub("modelscope:Qwen/X") == ("modelscope", "Qwen/X") and split_hub("hf:a/b") == ("huggingface", "a/b")
    assert split_hub("Qwen/X") == (None, "Qwen/X")
    assert resolve_model("qwen2.5-1.5b") == "unsloth/Qwen2.5-1.5B-Instruct"  # the default hub: Hugging Face id as is
    monkeypatch.setenv("LAB_MODEL_HUB", "modelscope")
    assert resolve_model("hf:Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    monkeypatch.setenv("LAB_MODEL_HUB", "civitai")
    with pytest.raises(ModelNotFound, match="LAB_MODEL_HUB='civitai': expected one of huggingface, modelscope"):
        resolve_model("Qwen/Qwen2.5-0.5B-Instruct")
