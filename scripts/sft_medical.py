"""Medical dialogue SFT from Chinese CSV files in any encoding, with BLEU/ROUGE evaluation.

    python -m scripts.sft_medical --config configs/sft_medical.yaml
    LAB_DATA_DIR=../shared/data python -m scripts.sft_medical --config configs/sft_medical_gpu.yaml
    papermill notebooks/sft_medical.ipynb out.ipynb -f configs/sft_medical.yaml

The file's encoding (UTF-8, UTF-8-BOM, UTF-16, GBK/GB18030, Big5), its layout (CSV,
or paired lines: question line, answer line, blank line; `format`), delimiter and
columns are detected (data_loaders/medical_csv.py); rows are cleaned and every
dropped row is reported. The data is read *before* the run folder is created,
so a bad file leaves nothing behind. Each run writes to
$LAB_OUTPUT_DIR/sft_medical/<run_name>/: the adapter, metrics.json (with the
encoding report), eval.json + eval.png (BLEU-4 and ROUGE-1/2/L of the base and
the tuned model on the test split), samples.md/.csv, lengths.png, training.png,
history.json, skipped_rows.csv, run_complete.json.
"""

from dataclasses import dataclass, field

from data_loaders.medical_csv import DEFAULT_SYSTEM_PROMPT, load_medical_csv, split_dataset
from lab_utils.core import plots
from lab_utils.core.artifacts import setup_logging
from lab_utils.core.config import run_cli
from lab_utils.core.distributed import is_main_process
from lab_utils.evaluation.evaluate import base_and_tuned_answers, write_text_evaluation
from lab_utils.models.chat import check_model_thinking
from lab_utils.training.params import LoraSFTParams
from lab_utils.training.runs import finish_run, open_run, save_training_artifacts
from lab_utils.training.lora import load_lora_model
from lab_utils.training.batching import tokenize_dataset
from lab_utils.training.trainer import train_lora

EXPERIMENT = "sft_medical"


@dataclass(kw_only=True)
class Params(LoraSFTParams):
    # data (the model, LoRA, optimisation, evaluation and run knobs: lab_utils.training.params's shared groups)
    data_file: str = "medical/dialogues_gbk.csv"  # under LAB_DATA_DIR or data/samples/
    encoding: str = ""  # "" = detect (utf-8, utf-8-sig, utf-16, gb18030, big5); or force one
    format: str = "auto"  # auto | csv | paired_lines (question line, answer line, blank line between blocks)
    columns: dict = field(default_factory=dict)  # {"ask": "患者提问", "answer": "医生回复"} when headers are unusual
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    min_length: int = 8  # characters of question + answer; shorter rows are dropped and reported
    max_length: int = 1024
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    heldout_rows: int = 8  # test rows answered by base and tuned model (generation is the slow part on CPU)
    # the CPU demo: 30 short rows, a few passes
    max_seq_length: int = 384
    max_steps: int = 20
    batch_size: int = 4


# Every experiment has the same steps, in this order (tests/test_experiment_steps.py checks it):
# load_data, setup_run, load_model, build_dataset, evaluate, train, save_artifacts, run, main.

def load_data(p: Params):
    """Read and clean the CSV (no run folder yet: bad input leaves nothing behind)."""
    check_model_thinking(p.model, p.enable_thinking)  # a template without the switch: one line, no run folder
    data = load_medical_csv(p.data_file, encoding=p.encoding or None, columns=p.columns or None, layout=p.format,
                            system_prompt=p.system_prompt or None, min_len=p.min_length, max_len=p.max_length)
    print(f"[lab] {data.summary()}")
    return data


def setup_run(p: Params):
    return open_run(EXPERIMENT, p)


def load_model(p: Params):
    return load_lora_model(p)


def build_dataset(p: Params, data, tokenizer):
    """(train tokens, validation tokens, test conversations) from a seeded split."""
    splits = split_dataset(data.dataset, seed=p.seed, validation=p.validation_fraction, test=p.test_fraction)
    train_tokens = tokenize_dataset(splits["train"], tokenizer, p.max_seq_length, data.report)
    validation_tokens = tokenize_dataset(splits["validation"], tokenizer, p.max_seq_length)
    test = splits["test"].select(range(min(p.heldout_rows, len(splits["test"]))))
    print(f"[lab] split: {len(train_tokens)} train, {len(validation_tokens)} validation, {len(test)} test rows evaluated")
    return train_tokens, validation_tokens, test


def evaluate(p: Params, run, model, tokenizer, test) -> dict:
    """BLEU-4 / ROUGE of the base model (adapter off) and the tuned one on the test rows."""
    base, tuned = base_and_tuned_answers(model, tokenizer, test["messages"], max_new_tokens=p.max_new_tokens)
    return write_text_evaluation(run, test["messages"], base, tuned, title=f"{p.model}: base vs LoRA")


def train(p: Params, model, tokenizer, train_tokens, validation_tokens, test, run, backend) -> dict:
    return train_lora(p, model, tokenizer, train_tokens, validation_tokens, run, backend,
                      sample_conversations=test["messages"][:2])


def save_artifacts(p: Params, run, model, tokenizer, outcome: dict, scores: dict, data, backend) -> dict:
    metrics = save_training_artifacts(p, run, model, tokenizer, outcome, data.report, backend)
    metrics.update({"data": encoding_report(data),
                    **{f"{side}_{name}": scores[side][name] for side in ("base", "tuned")
                       for name in ("bleu4", "rouge1", "rouge2", "rougeL")}})
    finish_run(run, EXPERIMENT, metrics, headline=("tuned_rougeL",))
    return metrics


def run(p: Params) -> dict:
    data = load_data(p)
    run_path = setup_run(p)
    model, tokenizer, backend = load_model(p)
    train_tokens, validation_tokens, test = build_dataset(p, data, tokenizer)
    plot_lengths(run_path, train_tokens)
    outcome = train(p, model, tokenizer, train_tokens, validation_tokens, test, run_path, backend)
    scores = evaluate(p, run_path, model, tokenizer, test)
    metrics = save_artifacts(p, run_path, model, tokenizer, outcome, scores, data, backend)
    print(f"[lab] done: {run_path}")
    return {"run_dir": str(run_path), "metrics": metrics, "scores": scores}


def encoding_report(data) -> dict:
    return {"file": data.path.name, "encoding": data.encoding, "format": data.layout,
            "delimiter": "tab" if data.delimiter == "\t" else data.delimiter,
            "columns": data.columns, "rows_read": data.rows_read, "rows_kept": data.report.kept,
            "rows_skipped": data.report.counts()}


def plot_lengths(run, train_tokens):
    """Token lengths of the training rows; written to the run folder by the main rank only (DDP)."""
    path = run / "lengths.png" if run and is_main_process() else None
    return plots.plot_length_histogram(train_tokens["length"], path)


def main(argv=None):
    setup_logging()
    result = run_cli(run, Params, argv, description=__doc__)
    for side in ("base", "tuned"):
        s = result["scores"][side]
        print(f"{side:>6}: BLEU-4 {s['bleu4']:.1f}  ROUGE-1 {s['rouge1']:.1f}  ROUGE-2 {s['rouge2']:.1f}  ROUGE-L {s['rougeL']:.1f}")


if __name__ == "__main__":
    main()
