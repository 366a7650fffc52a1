"""Evaluation shared by every experiment: base vs tuned answers, text metrics, perplexity.

The base model is the tuned model with its LoRA adapter switched off
(`model.disable_adapter()`), so A/B needs one model in memory and the two
sides differ by nothing but the adapter. Decoding is greedy and fixed, so two
runs of the same evaluation give the same answers.
"""

import math
from pathlib import Path

import torch

from lab_utils.core import plots
from lab_utils.core.artifacts import write_json, write_table
from lab_utils.models.chat import generate, prompt_of
from lab_utils.core.distributed import is_main_process
from lab_utils.evaluation.metrics import sample_table, text_metrics


def base_and_tuned_answers(model, tokenizer, conversations, max_new_tokens: int = 64, batch_size: int = 8):
    """(base answers, tuned answers) for each conversation's prompt."""
    with model.disable_adapter():
        base = generate(model, tokenizer, conversations, max_new_tokens=max_new_tokens, batch_size=batch_size)
    tuned = generate(model, tokenizer, conversations, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return base, tuned


def references_of(conversations) -> list[str]:
    return [c[-1]["content"] for c in conversations]


def questions_of(conversations) -> list[str]:
    return [prompt_of(c)[-1]["content"] for c in conversations]


def compare_text_metrics(base: list[str], tuned: list[str], references: list[str]) -> dict:
    """BLEU-4 / ROUGE-1/2/L (0..100) of both sides on the same references."""
    return {"base": text_metrics(base, references), "tuned": text_metrics(tuned, references)}


def write_text_evaluation(run_dir: Path, conversations, base: list[str], tuned: list[str], title: str = "") -> dict:
    """eval.json, eval.png (bar chart) and samples.md/.csv (question, reference, base, tuned)."""
    references = references_of(conversations)
    scores = compare_text_metrics(base, tuned, references)
    if not is_main_process():
        return scores  # under DDP every rank evaluates the same rows; one writes
    write_json(scores, Path(run_dir) / "eval.json")
    plots.plot_metric_comparison(scores["base"], scores["tuned"], title=title or "base vs fine-tuned",
                                 path=Path(run_dir) / "eval.png")
    write_table(sample_table(questions_of(conversations), references, base, tuned), run_dir, "samples")
    return scores


@torch.no_grad()
def perplexity(model, tokenizer, texts: list[str], max_length: int = 512) -> float:
    """exp(mean token negative log-likelihood) over plain texts (every token counts)."""
    was_training = model.training
    model.eval()
    total_nll, total_tokens = 0.0, 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"].to(model.device)
        if ids.shape[1] < 2:
            continue
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        total_nll += loss.item() * (ids.shape[1] - 1)
        total_tokens += ids.shape[1] - 1
    model.train(was_training)
    if total_tokens == 0:
        raise ValueError("perplexity needs texts of at least two tokens")
    return math.exp(total_nll / total_tokens)


# ---------------------------------------------------------------- several adapters on one base model

def load_adapters(adapters: dict, base_model: str | None = None):
    """One base model with several trained LoRA adapters under their names, plus the tokenizer.

    `adapters` maps a name to a finished run dir or an adapter folder. Switch between them
    with `model.set_adapter(name)`; `model.disable_adapter()` gives the base model.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lab_utils.export.merge import locate_adapter
    from lab_utils.models.registry import load_tokenizer, resolve_model

    located = {name: locate_adapter(path, base_model) for name, path in adapters.items()}
    first = next(iter(located.values()))
    base = AutoModelForCausalLM.from_pretrained(resolve_model(first.base_model))
    names = list(located)
    model = PeftModel.from_pretrained(base, str(located[names[0]].adapter_dir), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(located[name].adapter_dir), adapter_name=name)
    has_tokenizer = (first.adapter_dir / "tokenizer_config.json").exists()
    tokenizer_dir = first.adapter_dir if has_tokenizer else resolve_model(first.base_model)
    return model.eval(), load_tokenizer(str(tokenizer_dir))


def answers_per_adapter(model, tokenizer, conversations, names: list[str], max_new_tokens: int = 64) -> dict:
    """{"base": [...], name: [...] for each adapter}: the same prompts, greedy, adapter by adapter."""
    with model.disable_adapter():
        answers = {"base": generate(model, tokenizer, conversations, max_new_tokens=max_new_tokens)}
    for name in names:
        model.set_adapter(name)
        answers[name] = generate(model, tokenizer, conversations, max_new_tokens=max_new_tokens)
    return answers


def ab_table(conversations, answers: dict):
    """One row per prompt: the question, the reference (when the data has one), each model's answer."""
    import pandas as pd

    table = {"question": questions_of(conversations)}
    if all(c[-1]["role"] == "assistant" for c in conversations):
        table["reference"] = references_of(conversations)
    return pd.DataFrame({**table, **answers})


def write_ab_report(table, run_dir: Path, name: str = "ab", title: str = "A/B: base vs fine-tuned") -> Path:
    """<name>.md, <name>.csv and a self-contained <name>.html (escaped text, inline CSS)."""
    write_table(table, run_dir, name)
    cells = table.to_html(index=False, escape=True).replace("\\n", "<br>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:6px;vertical-align:top;max-width:28em}th{background:#f3f3f3}")
    html = f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head>" \
           f"<body><h1>{title}</h1>{cells}</body></html>"
    path = Path(run_dir) / f"{name}.html"
    path.write_text(html, encoding="utf-8")
    return path
