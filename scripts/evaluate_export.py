"""From a finished run to a comparison, a GGUF and a chat: evaluate, export, load it back.

    python -m scripts.evaluate_export --run_dir sft_alpaca/demo
    python -m scripts.evaluate_export --run_dir sft_alpaca/demo --compare_runs "[sft_alpaca/r8]"
    papermill notebooks/evaluate_export.ipynb out.ipynb -p run_dir sft_alpaca/demo

Steps: the run's training curves; an A/B table of the base model and every
adapter (the run's, plus `compare_runs`) on the same prompts, all loaded into
one model and switched with peft's set_adapter; perplexity of base and tuned
on the run's own training text; the export (scripts/export.py: merged
safetensors, GGUF, Ollama Modelfile); and the GGUF loaded back to answer the
first prompt, next to the merged model's answer. Output:
$LAB_OUTPUT_DIR/evaluate_export/<run name>/ (ab.md/.html/.csv, metrics.json)
and the export under $LAB_OUTPUT_DIR/export/<run name>/.
"""

from dataclasses import dataclass, field
from pathlib import Path

from data_loaders.alpaca import load_chat_file
from lab_utils.core import plots
from lab_utils.export.adapters import finished_sft_runs
from lab_utils.core.artifacts import read_json, setup_logging, write_json
from lab_utils.models.chat import generate, render
from lab_utils.core.config import run_cli
from lab_utils.evaluation.evaluate import ab_table, answers_per_adapter, load_adapters, perplexity, write_ab_report
from lab_utils.export.merge import ExportError, locate_adapter
from lab_utils.core.paths import mark_complete, output_dir, run_dir
from scripts import export as export_script

EXPERIMENT = "evaluate_export"


@dataclass(kw_only=True)
class Params:
    # a finished SFT run (folder, or relative to $LAB_OUTPUT_DIR); "" = newest finished sft_alpaca run
    run_dir: str = ""
    compare_runs: list = field(default_factory=list)  # more finished runs whose adapters join the A/B table
    prompts: list = field(default_factory=lambda: ["What is the capital of Italy?", "把这个词翻译成英文。\n\n月亮",
                                                   "What is 12 + 30?"])  # asked of base and tuned in the A/B table
    perplexity_rows: int = 16  # rows of the run's own training file scored by base and tuned
    max_new_tokens: int = 32  # longest answer per prompt, in tokens
    formats: str = "merged,gguf-f16,modelfile"  # see scripts/export.py; gguf-q8_0 / gguf-q4_k_m too
    serve_format: str = "gguf-f16"  # the export the Modelfile and the serve command point at
    overwrite: bool = False  # replace an earlier export of this run


def find_run(p: Params) -> Path:
    """The run to study; a clear error when there is none yet."""
    if p.run_dir:
        given = Path(p.run_dir).expanduser()
        return given if given.is_absolute() or given.exists() else output_dir() / given
    finished = finished_sft_runs()
    if not finished:
        raise ExportError(f"no finished sft_alpaca run under {output_dir()}: run `make demo` first or set run_dir")
    return finished[-1]


def setup_run(p: Params, run: Path) -> Path:
    locate_adapter(run)  # a missing or half-written run fails here, before anything is written
    out = run_dir(EXPERIMENT, run.name, overwrite=p.overwrite)
    return out


def training_curves(run: Path):
    return plots.plot_training(read_json(run / "history.json"), title=f"training: {run.name}")


def load_models(p: Params, run: Path):
    """One base model holding the run's adapter as "tuned" and each compared run's under its name."""
    adapters = {"tuned": run, **{Path(r).name: find_run(Params(run_dir=r)) for r in p.compare_runs}}
    model, tokenizer = load_adapters(adapters)
    return model, tokenizer, list(adapters)


def prompt_conversations(p: Params) -> list[list[dict]]:
    return [[{"role": "user", "content": text}] for text in p.prompts]


def compare(p: Params, out: Path, model, tokenizer, names: list[str]):
    answers = answers_per_adapter(model, tokenizer, prompt_conversations(p), names, p.max_new_tokens)
    table = ab_table(prompt_conversations(p), answers)
    write_ab_report(table, out)
    return table


def perplexities(p: Params, run: Path, model, tokenizer) -> dict:
    """Base vs tuned perplexity on the first rows of the run's own training file."""
    data_file = read_json(run / "params.json").get("data_file")
    dataset, _ = load_chat_file(data_file, limit=p.perplexity_rows)
    texts = [render(tokenizer, m) for m in dataset["messages"]]
    model.set_adapter("tuned")
    with model.disable_adapter():
        base = perplexity(model, tokenizer, texts)
    tuned = perplexity(model, tokenizer, texts)
    return {"perplexity_base": base, "perplexity_tuned": tuned, "perplexity_rows": len(texts)}


def export_run(p: Params, run: Path) -> dict:
    settings = export_script.Params(run_dir=str(run), formats=p.formats, serve_format=p.serve_format,
                                    overwrite=p.overwrite)
    return export_script.run(settings)


def gguf_answers_back(p: Params, exported: dict) -> dict:
    """The GGUF loaded back (transformers' GGUF reader) against the merged model, on the first prompt."""
    from transformers import AutoModelForCausalLM

    from lab_utils.models.gguf_reading import load_gguf_model
    from lab_utils.models.registry import load_tokenizer

    out = Path(exported["out_dir"])
    merged_dir, gguf = out / "merged", next(out.glob(f"*-{p.serve_format.removeprefix('gguf-')}.gguf"))
    tokenizer = load_tokenizer(str(merged_dir))  # the GGUF's own tokenizer is the same vocabulary
    question = prompt_conversations(p)[:1]
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype="float32")
    from_gguf = load_gguf_model(gguf, dtype="float32")
    return {"question": p.prompts[0], "merged": generate(merged, tokenizer, question, p.max_new_tokens)[0],
            "gguf": generate(from_gguf, tokenizer, question, p.max_new_tokens)[0], "gguf_file": gguf.name}


def save(out: Path, scores: dict, exported: dict, roundtrip: dict) -> dict:
    metrics = {**scores, "export_dir": exported["out_dir"], "artifacts": exported["artifacts"],
               "gguf_roundtrip": roundtrip, "gguf_same_answer": roundtrip["merged"] == roundtrip["gguf"]}
    write_json(metrics, out / "metrics.json")
    mark_complete(out, {"experiment": EXPERIMENT})
    return metrics


def run(p: Params) -> dict:
    run_path = find_run(p)
    out = setup_run(p, run_path)
    model, tokenizer, names = load_models(p, run_path)
    table = compare(p, out, model, tokenizer, names)
    scores = perplexities(p, run_path, model, tokenizer)
    exported = export_run(p, run_path)
    roundtrip = gguf_answers_back(p, exported)
    metrics = save(out, scores, exported, roundtrip)
    print(f"[lab] done: {out}")
    return {"out_dir": str(out), "metrics": metrics, "table": table}


def main(argv=None):
    setup_logging()
    result = run_cli(run, Params, argv, description=__doc__)
    print(result["table"].to_string(index=False))
    m = result["metrics"]
    print(f"perplexity base {m['perplexity_base']:.2f} -> tuned {m['perplexity_tuned']:.2f}; "
          f"GGUF answers like the merged model: {m['gguf_same_answer']}")


if __name__ == "__main__":
    main()
