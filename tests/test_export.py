"""Export: merged safetensors, GGUF through llama.cpp's converter, Ollama Modelfile, hub dry run.

The run dir under test is built the way the SFT script leaves one: adapter/ (peft
save_pretrained + tokenizer), params.json, metrics.json, run_complete.json last.
Its LoRA adapter has random B matrices (init_lora_weights=False), so merging it
really changes the model's outputs. llama.cpp's converter comes from the cached
llama-cpp-python sdist under $LAB_MODELS_DIR (fetched once with pip when missing).
"""

import json
import shutil

import pytest
import torch

from lab_utils.export.gguf import convert_to_gguf, find_quantizer, quantize_gguf, write_modelfile
from lab_utils.export.hub import push_to_hub
from lab_utils.export.merge import ExportError, locate_adapter, merge_adapter
from lab_utils.core.paths import mark_complete
from tests.helpers import TUTOR_PROMPT

PROMPT = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def finished_run(finished_sft_run):
    return finished_sft_run  # conftest's: a real sft_alpaca run on the tiny Llama


def parameter_count(model_dir) -> int:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir).num_parameters()


@pytest.fixture(scope="module")
def merged_f16(finished_run, tmp_path_factory):
    return merge_adapter(finished_run, tmp_path_factory.mktemp("export") / "merged", dtype="float16")


def _logits(model, tokenizer):
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    with torch.no_grad():
        return model(ids).logits[0]


def _gguf_fields(path):
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def text(key):
        field = reader.fields[key]
        return bytes(field.parts[field.data[0]]).decode()

    tokens = reader.fields["tokenizer.ggml.tokens"]
    return {
        **{k: text(k) for k in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.chat_template")},
        "merges": len(reader.fields["tokenizer.ggml.merges"].data) if "tokenizer.ggml.merges" in reader.fields else 0,
        "tokens": [bytes(tokens.parts[i]).decode() for i in tokens.data[:5]],
    }


def _greedy(model, tokenizer, new_tokens=12):
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=False)


# --- errors: missing, half-written, overwrite ------------------------------------------------


def test_missing_run_dir_is_one_clear_error(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        locate_adapter(tmp_path / "no-such-run")


def test_half_written_run_dir_is_refused(finished_run, tmp_path):
    half = tmp_path / "half"
    shutil.copytree(finished_run, half)
    (half / "run_complete.json").unlink()
    with pytest.raises(ExportError, match="not finished .*run_complete.json"):
        merge_adapter(half, tmp_path / "out")
    # pointing at its adapter/ folder does not sneak past the check
    with pytest.raises(ExportError, match="not finished"):
        locate_adapter(half / "adapter")
    assert not (tmp_path / "out").exists()


def test_folder_that_is_no_run_is_refused(tmp_path):
    with pytest.raises(ExportError, match="no LoRA adapter"):
        locate_adapter(tmp_path)


def test_finished_run_without_adapter_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "params.json").write_text(json.dumps({"model": "smollm2-135m"}))
    mark_complete(run)
    with pytest.raises(ExportError, match="no LoRA adapter"):
        locate_adapter(run)


def test_locate_adapter_reads_the_run_params(finished_run, tiny_lm_dir):
    trained = locate_adapter(finished_run)
    assert trained.adapter_dir == finished_run / "adapter"
    assert trained.base_model == tiny_lm_dir
    assert trained.system_prompt == TUTOR_PROMPT


def test_existing_output_is_not_overwritten(finished_run, tmp_path):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="already exists.*overwrite=True"):
        merge_adapter(finished_run, out)
    assert (out / "keep.txt").read_text() == "mine"


def test_kquant_without_quantizer_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no llama-quantize binary here
    if find_quantizer() is not None:
        pytest.skip("llama-cpp-python is installed: the binding is the quantizer")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ExportError, match="llama-quantize.*pip install llama-cpp-python"):
        quantize_gguf(gguf, tmp_path / "m-q4_k_m.gguf", "q4_k_m")


def test_converter_rejects_kquant_outtype(tmp_path):
    with pytest.raises(ExportError, match="quantize_gguf"):
        convert_to_gguf(tmp_path, tmp_path / "x.gguf", outtype="q4_k_m")


# --- merged safetensors ------------------------------------------------------------------------


def test_merged_logits_equal_base_plus_adapter(finished_run, tiny_lm_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lab_utils.models.registry import load_tokenizer

    merged_dir = merge_adapter(finished_run, tmp_path / "merged32", dtype="float32")
    assert (merged_dir / "model.safetensors").exists() and (merged_dir / "chat_template.jinja").exists()
    assert not list(tmp_path.glob("*.partial"))
    tokenizer = load_tokenizer(str(merged_dir))
    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32)
    base_logits = _logits(base, tokenizer)
    with_adapter = PeftModel.from_pretrained(base, str(finished_run / "adapter"))
    expected = _logits(with_adapter, tokenizer)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    actual = _logits(merged, tokenizer)
    # the trained adapter really changes the model: by 100x the tolerance the merge is held to below
    assert (expected - base_logits).abs().max() > 100 * 2e-4
    torch.testing.assert_close(actual, expected, atol=2e-4, rtol=1e-4)


def test_merged_f16_folder_is_16bit_and_overwritable(merged_f16, finished_run):
    config = json.loads((merged_f16 / "config.json").read_text())
    assert config["dtype"] == "float16"
    weights = (merged_f16 / "model.safetensors").stat().st_size
    assert 0 < weights - 2 * parameter_count(merged_f16) < 1e5  # 2 bytes a parameter, plus the header
    # the SentencePiece leftovers repaired for llama.cpp change nothing in HF tokenization
    from lab_utils.models.registry import load_tokenizer, resolve_model

    original, repaired = load_tokenizer(resolve_model("smollm2-135m")), load_tokenizer(str(merged_f16))
    text = "Hello wörld 123 <|im_end|> ✓\n  x"
    ids = original(text)["input_ids"]
    assert repaired(text)["input_ids"] == ids and repaired.decode(ids) == original.decode(ids) == text
    again = merge_adapter(finished_run, merged_f16, dtype="float16", overwrite=True)
    assert again == merged_f16 and (again / "model.safetensors").exists()


# --- GGUF ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf_f16(merged_f16, tmp_path_factory):
    """The suite's one GGUF conversion: the tiny model (8 MB) with the real SmolLM2 tokenizer."""
    return convert_to_gguf(merged_f16, tmp_path_factory.mktemp("gguf") / "model-f16.gguf", outtype="f16")


def test_gguf_f16_loads_back_with_the_merged_models_weights(merged_f16, gguf_f16, monkeypatch):
    import gguf as gguf_py
    from transformers import AutoModelForCausalLM

    from lab_utils.models.gguf_reading import load_gguf_model
    from lab_utils.models.registry import load_tokenizer

    gguf = gguf_f16
    assert gguf.stat().st_size > 2 * parameter_count(merged_f16) and not list(gguf.parent.glob("*.partial"))
    tokenizer = load_tokenizer(str(merged_f16))
    from_hf = AutoModelForCausalLM.from_pretrained(merged_f16, dtype=torch.float32)
    parsed = []

    class CountingReader(gguf_py.GGUFReader):
        def __init__(self, path, *args, **kwargs):
            parsed.append(path)
            super().__init__(path, *args, **kwargs)

    monkeypatch.setattr(gguf_py, "GGUFReader", CountingReader)
    from_gguf = load_gguf_model(gguf, dtype=torch.float32)
    assert len(parsed) == 1 and gguf_py.GGUFReader is CountingReader  # config and weights: one parse, then restored
    # f16 in, f16 out: llama.cpp's file holds the merged model's very weights
    torch.testing.assert_close(_logits(from_gguf, tokenizer), _logits(from_hf, tokenizer), atol=1e-4, rtol=1e-4)
    assert _greedy(from_gguf, tokenizer) == _greedy(from_hf, tokenizer)
    # llama.cpp must see SmolLM2's byte-level BPE (gpt2 vocab, smollm pre-tokenizer, merges),
    # not a SentencePiece vocab; read the GGUF metadata directly (transformers' GGUF
    # tokenizer loader rebuilds merges in Python and takes minutes).
    fields = _gguf_fields(gguf)
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "smollm"
    vocab = json.loads((merged_f16 / "tokenizer.json").read_text())["model"]
    assert fields["merges"] == len(vocab["merges"]) > 0
    assert fields["tokens"][:5] == [t for t, _ in sorted(vocab["vocab"].items(), key=lambda kv: kv[1])][:5]
    assert "<|im_start|>" in fields["tokenizer.chat_template"]
    with pytest.raises(ExportError, match="already exists"):
        convert_to_gguf(merged_f16, gguf, outtype="f16")


def test_gguf_q4_k_m_with_llama_quantize(gguf_f16, tmp_path):
    if find_quantizer() is None:
        pytest.skip("no llama-quantize on PATH and no llama-cpp-python")
    q4 = quantize_gguf(gguf_f16, tmp_path / "model-q4_k_m.gguf", "q4_k_m")
    assert q4.stat().st_size < gguf_f16.stat().st_size  # the tiny model's rows (64) fall back to q5_0/q8_0


# --- Modelfile -------------------------------------------------------------------------------------


def test_modelfile_has_template_stops_and_system(smollm_tokenizer, tmp_path):
    gguf = tmp_path / "model-q8_0.gguf"
    gguf.write_bytes(b"GGUF")  # the Modelfile only names it
    path = write_modelfile(gguf, smollm_tokenizer, TUTOR_PROMPT, temperature=0.2, num_ctx=4096)
    text = path.read_text()
    assert path == tmp_path / "Modelfile"
    assert text.startswith("FROM ./model-q8_0.gguf\n")
    assert ('TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
            '<|im_start|>assistant\n"""') in text
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "<|im_start|>"' in text
    assert "PARAMETER temperature 0.2" in text and "PARAMETER top_p 0.9" in text and "PARAMETER num_ctx 4096" in text
    assert f'SYSTEM """{TUTOR_PROMPT}"""' in text
    with pytest.raises(ExportError, match="already exists"):
        write_modelfile(gguf, smollm_tokenizer, TUTOR_PROMPT)


def test_modelfile_defaults_to_the_templates_own_system_prompt(smollm_tokenizer, tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    text = write_modelfile(gguf, smollm_tokenizer).read_text()
    # SmolLM2's Jinja inserts this when a conversation has no system message
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in text


def test_unknown_template_family_is_a_clear_error(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    from lab_utils.models.registry import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model("smollm2-135m"))
    tokenizer.chat_template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    with pytest.raises(ExportError, match="unknown chat template family"):
        write_modelfile(gguf, tokenizer)
    assert not (tmp_path / "Modelfile").exists()


@pytest.fixture(scope="module")
def smollm_tokenizer():
    from lab_utils.models.registry import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model("smollm2-135m"))


# --- hub ---------------------------------------------------------------------------------------------


def test_push_to_hub_dry_run_lists_files_and_never_needs_the_token(tmp_path, monkeypatch, capsys):
    (tmp_path / "sub").mkdir()
    (tmp_path / "Modelfile").write_text("FROM ./m.gguf\n")
    (tmp_path / "sub" / "m.gguf").write_bytes(b"x" * 1000)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    files = push_to_hub(tmp_path, "me/model", dry_run=True)
    assert files == [("Modelfile", 14), ("sub/m.gguf", 1000)]
    assert "hf_secret_value" not in capsys.readouterr().out


def test_push_to_hub_without_token_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("a")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ExportError, match=r"\$HF_TOKEN"):
        push_to_hub(tmp_path, "me/model", dry_run=False)


# --- the CLI -----------------------------------------------------------------------------------------


def test_cli_refuses_an_unfinished_run_before_writing(finished_run, tmp_path, monkeypatch):
    from scripts import export as cli

    monkeypatch.setenv("LAB_OUTPUT_DIR", str(tmp_path / "outputs"))
    half = tmp_path / "half"
    shutil.copytree(finished_run, half)
    (half / "run_complete.json").unlink()
    with pytest.raises(SystemExit, match="^error: run .* is not finished"):
        cli.main(["--run_dir", str(half)])
    assert not (tmp_path / "outputs").exists()


def test_cli_checks_formats(finished_run):
    from scripts import export as cli

    with pytest.raises(SystemExit, match="unknown \\['gguf-q3'\\]"):
        cli.main(["--run_dir", str(finished_run), "--formats", "merged,gguf-q3"])
    with pytest.raises(SystemExit, match="serve_format"):
        cli.main(["--run_dir", str(finished_run), "--formats", "gguf-f16,modelfile"])


def test_cli_exports_q8_0_and_modelfile(finished_run, tiny_lm_dir, tmp_path, monkeypatch):
    from scripts import export as cli

    monkeypatch.setenv("LAB_OUTPUT_DIR", str(tmp_path))
    result = cli.main(["--run_dir", str(finished_run), "--formats", "gguf-q8_0,modelfile", "--hub_repo", "me/tutor"])
    out = tmp_path / "export" / "sft-demo"
    assert result["out_dir"] == str(out) and (out / "run_complete.json").exists()
    assert [a["artifact"] for a in result["artifacts"]] == ["merged", "gguf-q8_0", "modelfile"]
    gguf = out / "sft-demo-q8_0.gguf"
    parameters = parameter_count(out / "merged")
    assert parameters < gguf.stat().st_size < 2 * parameters  # ~8.5 bits per weight (+ the vocabulary): not f16
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./sft-demo-q8_0.gguf" in modelfile and f'SYSTEM """{TUTOR_PROMPT}"""' in modelfile
    assert json.loads((out / "export.json").read_text())["base_model"] == tiny_lm_dir
    with pytest.raises(SystemExit, match="already finished"):
        cli.main(["--run_dir", str(finished_run), "--formats", "gguf-q8_0,modelfile"])


# --- a vision-language run ---------------------------------------------------------------------------


def _vision_inputs(processor):
    import numpy as np
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is written here?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return processor(text=[text], images=[[image]], return_tensors="pt")


def test_vision_run_merges_into_a_16bit_image_text_model(tmp_path):
    """A LoRA on the tiny Qwen2.5-VL (language and vision blocks), saved the way sft_vision saves it,
    merges into a folder that loads as image-text-to-text with its processor and answers as base + adapter did."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForImageTextToText

    from lab_utils.models.registry import resolve_model
    from lab_utils.vision.processor import load_vision_processor

    source = resolve_model("tiny-qwen2.5-vl")
    processor = load_vision_processor(source)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32)
    targets = r".*(language_model\.layers\.\d+\.self_attn\.(q_proj|v_proj)|visual\.blocks\.\d+\.attn\.qkv)"
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
    run = tmp_path / "sft_vision-demo"
    peft_model.save_pretrained(run / "adapter")
    processor.save_pretrained(run / "adapter")
    (run / "params.json").write_text(json.dumps({"model": "tiny-qwen2.5-vl", "system_prompt": ""}))
    mark_complete(run)

    merged_dir = merge_adapter(run, tmp_path / "merged", dtype="float32")
    assert not list(tmp_path.glob("*.partial"))
    merged = AutoModelForImageTextToText.from_pretrained(merged_dir, dtype=torch.float32).eval()
    merged_processor = load_vision_processor(str(merged_dir))
    inputs = _vision_inputs(merged_processor)
    assert torch.equal(inputs["input_ids"], _vision_inputs(processor)["input_ids"])  # same tokens and image grid
    base = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base(**inputs).logits
        expected = PeftModel.from_pretrained(base, str(run / "adapter")).eval()(**inputs).logits
        actual = merged(**inputs).logits
    assert not any("lora" in name for name in merged.state_dict())
    assert (expected - base_logits).abs().max() > 1e-3  # the adapter really changes the answer
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)

    from scripts import export as cli  # the same merge from the command line, 16-bit

    result = cli.main(["--run_dir", str(run), "--formats", "merged", "--dtype", "float16",
                       "--out_dir", str(tmp_path / "cli")])
    half = tmp_path / "cli" / "merged"
    assert [a["artifact"] for a in result["artifacts"]] == ["merged"]
    assert (tmp_path / "cli" / "run_complete.json").exists()
    assert json.loads((half / "config.json").read_text())["dtype"] == "float16"
    assert AutoModelForImageTextToText.from_pretrained(half).dtype == torch.float16
    assert load_vision_processor(str(half)).image_processor is not None
    with pytest.raises(ExportError, match="already exists"):
        merge_adapter(run, half)
