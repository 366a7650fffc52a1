"""Progress bars and the small things a newcomer sees in a run's output.

One bar per long step, drawn for where the output goes (lab_utils/core/progress.py); a
greedy answer cut at max_new_tokens keeps whole characters only; training records a
real tokens-per-second number; no per-step dicts of strings.
"""

import json
import os
from pathlib import Path
from dataclasses import asdict

import pytest
import torch

from lab_utils.models.chat import REPLACEMENT_CHARACTER, decode_whole_characters, generate, render
from lab_utils.core.progress import progress_bar, progress_mode
from scripts import demo

# SmolLM2 answers this in Chinese; greedy, its first tokens end inside a character at 1, 3 and 5 tokens
CHINESE_PROMPT = [{"role": "user", "content": "请用中文介绍你自己。"}]


def test_lab_progress_forces_a_mode_and_rejects_a_typo(monkeypatch):
    for mode in ("widgets", "line", "log", "off"):
        monkeypatch.setenv("LAB_PROGRESS", mode)
        assert progress_mode() == mode
    monkeypatch.setenv("LAB_PROGRESS", "widget")
    with pytest.raises(ValueError, match="LAB_PROGRESS='widget': expected one of auto, widgets, line, log, off"):
        progress_mode()


def test_output_read_as_a_log_gets_a_few_lines_not_one_per_update(monkeypatch, capsys):
    monkeypatch.delenv("LAB_PROGRESS", raising=False)
    assert progress_mode() == "log"  # not a kernel, and pytest's captured stderr is not a terminal
    with progress_bar(total=5000, desc="steps") as bar:
        for _ in range(5000):
            bar.update(1)
    out = capsys.readouterr().out
    assert out.count("\r") <= 3, "in a log, a redraw per update would be a line per update"
    assert "steps: 100%" in out and "5000/5000" in out
    monkeypatch.setenv("LAB_PROGRESS", "off")
    with progress_bar(total=3, desc="quiet") as bar:
        bar.update(3)
    assert capsys.readouterr() == ("", "")


@pytest.mark.notebook
def test_a_notebook_under_papermill_logs_progress_as_plain_lines(tmp_path, monkeypatch):
    import subprocess
    import sys

    import nbformat

    from lab_utils.core.notebooks import execute
    from lab_utils.core.paths import REPO_ROOT

    monkeypatch.delenv("LAB_PROGRESS", raising=False)
    notebook = tmp_path / "mode.ipynb"
    cell = "from lab_utils.core.progress import progress_mode\nprint(progress_mode())"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)]), notebook)
    # the lab's own runner (make demo, batch runs, tests) tells its kernels
    executed = execute(notebook, tmp_path / "lab.ipynb")
    assert executed["cells"][0]["outputs"][0]["text"].strip() == "log"
    # the papermill command line, which tells the kernel nothing: recognised as the kernel's parent
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-m", "papermill", str(notebook), str(tmp_path / "cli.ipynb"), "-k", "python3",
                    "--cwd", str(REPO_ROOT)], check=True, env=env, capture_output=True, timeout=300)
    cli = nbformat.read(tmp_path / "cli.ipynb", as_version=4)
    assert cli.cells[0].outputs[0].text.strip() == "log"


def test_a_cut_multibyte_character_is_dropped_not_shown_as_a_replacement(tokenizer):
    text = "翻译: 你好世界"
    ids = tokenizer.encode(text, add_special_tokens=False)
    cut = [k for k in range(1, len(ids)) if tokenizer.decode(ids[:k]).endswith(REPLACEMENT_CHARACTER)]
    assert cut, "the byte-level tokenizer splits these characters over several tokens"
    for k in cut:
        whole = decode_whole_characters(tokenizer, ids[:k])
        assert REPLACEMENT_CHARACTER not in whole and text.startswith(whole)
        assert len(whole) == len(tokenizer.decode(ids[:k])) - 1  # only the half character went
    assert decode_whole_characters(tokenizer, ids) == text


def test_greedy_answer_cut_at_max_new_tokens_ends_in_a_whole_character(embedded_model, tokenizer):
    prompt = render(tokenizer, CHINESE_PROMPT, add_generation_prompt=True)
    batch = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        raw = embedded_model.generate(**batch, max_new_tokens=3, do_sample=False)[0, batch["input_ids"].shape[1]:]
    raw_text = tokenizer.decode(raw, skip_special_tokens=True)
    assert raw_text.endswith(REPLACEMENT_CHARACTER), "the third greedy token stops inside a character"
    answer = generate(embedded_model, tokenizer, [CHINESE_PROMPT], max_new_tokens=3)[0]
    assert answer == raw_text.rstrip(REPLACEMENT_CHARACTER).strip() and answer
    assert REPLACEMENT_CHARACTER not in answer


def test_a_streamed_chat_answer_cut_at_max_new_tokens_ends_in_a_whole_character(embedded_model_dir):
    from scripts import chat

    bot = chat.HFChat(Path(embedded_model_dir), chat.Params(max_new_tokens=3, temperature=0.0))
    pieces = list(bot.stream(CHINESE_PROMPT))  # the greedy answer above: its third token stops inside a character
    assert "".join(pieces).strip() and not "".join(pieces).endswith(REPLACEMENT_CHARACTER), pieces


def test_a_tiny_run_shows_bars_records_numbers_and_sums_up_like_make_demo(tmp_path, capsys, monkeypatch):
    from lab_utils.core.artifacts import read_json
    from lab_utils.core.paths import output_dir
    from scripts import sft_alpaca

    monkeypatch.delenv("LAB_PROGRESS", raising=False)
    p = sft_alpaca.Params(max_rows=24, heldout_rows=2, max_steps=2, batch_size=4, lora_r=4, lora_alpha=8,
                          max_new_tokens=4, max_seq_length=128, report_to="none", run_name="bars")
    sft_alpaca.run(p)
    out = capsys.readouterr().out
    assert "{'loss'" not in out and "'eval_loss': '" not in out, "no per-step dict of formatted strings"
    closed_bars = [line.split("\r")[-1] for line in out.split("\n") if "\r" in line]  # a bar's last redraw
    train = [bar for bar in closed_bars if bar.startswith("train:")]
    assert len(train) == 1 and "100%" in train[0] and "2/2" in train[0] and "loss=" in train[0]
    generation = [bar for bar in closed_bars if bar.startswith("generate:")]
    assert len(generation) == 2 and all("100%" in bar for bar in generation)  # before and after training
    evaluation = [bar for bar in closed_bars if bar.startswith("eval loss:")]
    assert len(evaluation) == 2 and all("100%" in bar for bar in evaluation)  # the held-out loss, before and after
    metrics = read_json(output_dir() / "sft_alpaca" / "bars" / "metrics.json")
    assert isinstance(metrics["train_tokens_per_second"], float) and metrics["train_tokens_per_second"] > 0
    rate = metrics["tokens_seen"] / metrics["train_seconds"]
    assert metrics["train_tokens_per_second"] == pytest.approx(rate, rel=0.01, abs=0.05)  # rounded to 0.1
    assert isinstance(metrics["eval_loss_after"], float)  # numbers, not strings
    history = json.loads((output_dir() / "sft_alpaca" / "bars" / "history.json").read_text())
    assert all(isinstance(r["loss"], float) for r in history if "loss" in r)
    # what `make demo` prints from such a run: what it did and what to try next, in <= 15 lines with its first
    lines = demo.summary(asdict(p), output_dir() / "sft_alpaca" / "bars", tmp_path / "executed.ipynb", seconds=12.3)
    assert 1 + len(lines) <= demo.MAX_SUMMARY_LINES and all("\n" not in line for line in lines)
    text = "\n".join(lines)
    assert f"{metrics['global_step']} steps on cpu" in text and "tokens/s" in text and "None" not in text
    assert REPLACEMENT_CHARACTER not in text
    for next_step in ("make lab", "sft_medical", "teach_svd", "configs/sft_alpaca_gpu.yaml", "scripts.evaluate_export"):
        assert next_step in text, next_step


def test_gguf_export_follows_the_file_with_one_bar(tokenizer, tmp_path, capsys, monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    from lab_utils.export.gguf import convert_to_gguf, expected_gguf_bytes

    monkeypatch.setenv("LAB_PROGRESS", "log")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    expected = expected_gguf_bytes(tmp_path / "tiny", "f16")
    gguf = convert_to_gguf(tmp_path / "tiny", tmp_path / "tiny-f16.gguf", outtype="f16")
    out = capsys.readouterr().out
    bars = [line.split("\r")[-1] for line in out.split("\n") if "\r" in line and "convert_hf_to_gguf" in line]
    assert len(bars) == 1 and "100%" in bars[0], out[-500:]
    # the estimate behind the bar: within 10% of the real file (vocabulary and metadata come on top)
    assert abs(gguf.stat().st_size - expected) / gguf.stat().st_size < 0.10
