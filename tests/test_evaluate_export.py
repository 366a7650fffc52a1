"""After training: A/B with several adapters, perplexity, the export round trip, chat and serve."""

import json
import subprocess
import sys

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from lab_utils.evaluation.evaluate import ab_table, answers_per_adapter, load_adapters, perplexity, write_ab_report
from lab_utils.core.notebooks import NOTEBOOKS_DIR, execute
from lab_utils.core.paths import REPO_ROOT, mark_complete
from scripts import serve

QUESTIONS = [[{"role": "user", "content": "What is the capital of France?"}]]


def fake_finished_run(folder, base_model_dir, seed, target_modules=("q_proj", "v_proj")):
    """A run dir as sft_alpaca writes it, holding a random (non-zero) LoRA adapter."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=list(target_modules), init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder / "adapter")
    (folder / "params.json").write_text(json.dumps({"model": str(base_model_dir), "data_file": "alpaca_sample.jsonl"}))
    mark_complete(folder)
    return folder


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_lm_dir):
    root = tmp_path_factory.mktemp("runs")
    return [fake_finished_run(root / name, tiny_lm_dir, seed) for seed, name in enumerate(("one", "two"))]


@pytest.fixture(scope="module")
def trained_run(finished_sft_run):
    return finished_sft_run  # conftest's: a real sft_alpaca run on the tiny Llama, 6 steps at lr 5e-3


def test_switching_adapters_changes_the_answers(two_runs, tmp_path):
    model, tokenizer = load_adapters({"one": two_runs[0], "two": two_runs[1]})
    answers = answers_per_adapter(model, tokenizer, QUESTIONS, ["one", "two"], max_new_tokens=8)
    assert set(answers) == {"base", "one", "two"}
    assert answers["one"] != answers["two"] and answers["base"] != answers["one"]
    table = ab_table(QUESTIONS, answers)
    html = write_ab_report(table, tmp_path).read_text()
    assert "<table" in html and "capital of France" in html
    assert (tmp_path / "ab.md").exists() and (tmp_path / "ab.csv").exists()


@pytest.mark.learning
def test_fine_tuning_lowers_perplexity_on_its_own_text(trained_run):
    from data_loaders.alpaca import load_chat_file
    from lab_utils.models.chat import render

    model, tokenizer = load_adapters({"tuned": trained_run})
    rows, _ = load_chat_file("alpaca_sample.jsonl", limit=24)
    texts = [render(tokenizer, m) for m in rows["messages"]]
    with model.disable_adapter():
        base = perplexity(model, tokenizer, texts)
    assert perplexity(model, tokenizer, texts) < 0.95 * base  # measured 47.9k -> 42.5k (seeded)


def test_chat_through_a_pipe_answers_and_exits(trained_run):
    done = subprocess.run([sys.executable, "-m", "scripts.chat", "--target", str(trained_run), "--max_new_tokens", "8"],
                          input="What is the capital of Japan?\n/reset\nHi\n/exit\nnever read\n", cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("assistant> ") == 2 and "[conversation reset]" in done.stdout


def test_chat_and_serve_refuse_a_missing_target(tmp_path):
    for module in ("scripts.chat", "scripts.serve"):
        done = subprocess.run([sys.executable, "-m", module, "--target", str(tmp_path / "nope")], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_serve_prints_lora_and_merged_commands(two_runs, tmp_path):
    command, name = serve.serve_command(serve.Params(target=str(two_runs[0]), name="tutor"))
    assert command[:2] == ["vllm", "serve"] and "--enable-lora" in command
    assert f"tutor={two_runs[0] / 'adapter'}" in command
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    command, name = serve.serve_command(serve.Params(target=str(merged)))
    assert command[2] == str(merged) and "--enable-lora" not in command and name == "merged"
    assert "base_url=" in serve.client_snippet(serve.Params(), name)


@pytest.mark.notebook
def test_notebook_evaluates_exports_and_loads_the_gguf_back(trained_run, tmp_path):
    from lab_utils.core.artifacts import read_json
    from lab_utils.core.paths import output_dir

    execute(NOTEBOOKS_DIR / "evaluate_export.ipynb", tmp_path / "out.ipynb",
            {"run_dir": str(trained_run), "prompts": ["What is the capital of Italy?"], "max_new_tokens": 12})
    metrics = read_json(output_dir() / "evaluate_export" / trained_run.name / "metrics.json")
    assert metrics["gguf_same_answer"], metrics["gguf_roundtrip"]
    assert metrics["perplexity_tuned"] < metrics["perplexity_base"]
    assert {a["artifact"] for a in metrics["artifacts"]} == {"merged", "gguf-f16", "modelfile"}
