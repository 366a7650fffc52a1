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

from dataclasses import dataclass, field, replace
from pathlib import Path

from data_loaders.common import data_error, rows_left
from data_loaders.medical_csv import DEFAULT_SYSTEM_PROMPT, MedicalCSV, load_medical_csv, split_dataset
from lab_utils.core import plots
from lab_utils.core.artifacts import setup_logging
from lab_utils.core.config import run_cli
from lab_utils.core.distributed import is_main_process
from lab_utils.evaluation.evaluate import (base_and_tuned_answers, compare_text_metrics, references_of,
                                          write_text_evaluation)
from lab_utils.models.chat import check_model_thinking
from lab_utils.training.params import LoraSFTParams
from lab_utils.training.steps import Data, LoadedModel
from lab_utils.training.runs import finish_run, open_run, save_training_artifacts
from lab_utils.training.lora import load_lora_model
from lab_utils.training.batching import load_data_tokenizer, tokenize_dataset
from lab_utils.training.trainer import train_lora

EXPERIMENT = "sft_medical"


@dataclass(kw_only=True)
class Params(LoraSFTParams):
    # data (the model, LoRA, optimisation, evaluation and run knobs: lab_utils.training.params's shared groups)
    data_file: str = "medical/dialogues_gbk.csv"  # under LAB_DATA_DIR or data/samples/
    encoding: str = ""  # "" = detect (utf-8, utf-8-sig, utf-16, gb18030, big5); or force one
    format: str = "auto"  # auto | csv | paired_lines (question line, answer line, blank line between blocks)
    columns: dict = field(default_factory=dict)  # {"ask": "患者提问", "answer": "医生回复"} when headers are unusual
    system_prompt: str = DEFAULT_SYSTEM_PROMPT  # the system turn every conversation gets
    min_length: int = 8  # characters of question + answer; shorter rows are dropped and reported
    max_length: int = 1024  # characters of question + answer; longer rows are dropped and reported
    validation_fraction: float = 0.1  # share of rows held out for the eval loss
    test_fraction: float = 0.1  # share of rows held out for the before/after answers and BLEU/ROUGE
    heldout_rows: int = 8  # test rows answered by base and tuned model (generation is the slow part on CPU)
    # the CPU demo: 30 short rows, a few passes
    max_seq_length: int = 384  # longest tokenised row; longer rows are cut
    max_steps: int = 20
    batch_size: int = 4


# Every experiment has the same steps, in this order (tests/test_experiment_steps.py checks it):
# load_data, build_dataset, setup_run, load_model, evaluate, train, save_artifacts, run, main.

@dataclass
class MedicalData(Data):
    csv: MedicalCSV | None = None  # how the file was read: encoding, layout, delimiter, columns, rows read


def load_data(p: Params) -> MedicalData:
    """Read, clean and split the CSV (no run folder yet: bad input leaves nothing behind).

    train: the training rows; eval_set: the validation rows (eval loss); heldout: the first
    heldout_rows test rows, answered by the base and the tuned model."""
    check_model_thinking(p.model, p.enable_thinking)  # a template without the switch: one line, no run folder
    csv = load_medical_csv(p.data_file, encoding=p.encoding or None, columns=p.columns or None, layout=p.format,
                           system_prompt=p.system_prompt or None, min_len=p.min_length, max_len=p.max_length)
    print(f"[lab] {csv.summary()}")
    try:
        splits = split_dataset(csv.dataset, seed=p.seed, validation=p.validation_fraction, test=p.test_fraction)
    except ValueError as err:
        raise data_error(csv.path, str(err)) from None
    test = splits["test"].select(range(min(p.heldout_rows, len(splits["test"]))))
    return MedicalData(train=splits["train"], heldout=test, report=csv.report, eval_set=splits["validation"], csv=csv)


def build_dataset(p: Params, data: MedicalData) -> MedicalData:
    """Training and validation rows as tokens, by the model's tokenizer (not the model): rows that leave
    nothing to learn stop here, before the run folder exists."""
    tokenizer = load_data_tokenizer(p)
    train_tokens = rows_left(tokenize_dataset(data.train, tokenizer, p.max_seq_length, data.report), data.csv.path,
                             f"tokenizing (every answer lies beyond max_seq_length={p.max_seq_length})",
                             "raise max_seq_length or lower max_length")
    validation_tokens = tokenize_dataset(data.eval_set, tokenizer, p.max_seq_length)
    print(f"[lab] split: {len(train_tokens)} train, {len(validation_tokens)} validation, "
          f"{len(data.heldout)} test rows evaluated")
    return replace(data, train=train_tokens, eval_set=validation_tokens if len(validation_tokens) else None)


def setup_run(p: Params) -> Path:
    return open_run(EXPERIMENT, p)


def load_model(p: Params) -> LoadedModel:
    return LoadedModel(*load_lora_model(p))


def evaluate(p: Params, lm: LoadedModel, data: MedicalData) -> dict:
    """Answers of the base model (adapter off) and the tuned one to the test rows, and their BLEU-4 / ROUGE."""
    conversations = data.heldout["messages"]
    base, tuned = base_and_tuned_answers(lm.model, lm.tokenizer, conversations, max_new_tokens=p.max_new_tokens)
    return {"base": base, "tuned": tuned, "scores": compare_text_metrics(base, tuned, references_of(conversations))}


def train(p: Params, lm: LoadedModel, data: MedicalData, run_dir: Path) -> dict:
    return train_lora(p, lm.model, lm.tokenizer, data.train, data.eval_set, run_dir, lm.backend,
                      sample_conversations=data.heldout["messages"][:2])


def save_artifacts(p: Params, run_dir: Path, lm: LoadedModel, data: MedicalData, outcome: dict,
                   evaluation: dict) -> dict:
    metrics = save_training_artifacts(p, run_dir, lm.model, lm.tokenizer, outcome, data.report, lm.backend)
    scores = write_text_evaluation(run_dir, data.heldout["messages"], evaluation["base"], evaluation["tuned"],
                                   title=f"{p.model}: base vs LoRA")
    metrics.update({"data": encoding_report(data.csv),
                    **{f"{side}_{name}": scores[side][name] for side in ("base", "tuned")
                       for name in ("bleu4", "rouge1", "rouge2", "rougeL")}})
    finish_run(run_dir, EXPERIMENT, metrics, headline=("tuned_rougeL",))
    return metrics


def run(p: Params) -> dict:
    data = build_dataset(p, load_data(p))
    run_dir = setup_run(p)
    lm = load_model(p)
    plot_lengths(run_dir, data.train)
    outcome = train(p, lm, data, run_dir)
    evaluation = evaluate(p, lm, data)
    metrics = save_artifacts(p, run_dir, lm, data, outcome, evaluation)
    print(f"[lab] done: {run_dir}")
    return {"run_dir": str(run_dir), "metrics": metrics, "scores": evaluation["scores"]}


def encoding_report(data) -> dict:
    return {"file": data.path.name, "encoding": data.encoding, "format": data.layout,
            "delimiter": "tab" if data.delimiter == "\t" else data.delimiter,
            "columns": data.columns, "rows_read": data.rows_read, "rows_kept": data.report.kept,
            "rows_skipped": data.report.counts()}


def plot_lengths(run_dir, train_tokens):
    """Token lengths of the training rows; written to the run folder by the main rank only (DDP)."""
    path = run_dir / "lengths.png" if run_dir and is_main_process() else None
    return plots.plot_length_histogram(train_tokens["length"], path)


def main(argv=None):
    setup_logging()
    result = run_cli(run, Params, argv, description=__doc__)
    for side in ("base", "tuned"):
        s = result["scores"][side]
        print(f"{side:>6}: BLEU-4 {s['bleu4']:.1f}  ROUGE-1 {s['rouge1']:.1f}  ROUGE-2 {s['rouge2']:.1f}  "
              f"ROUGE-L {s['rougeL']:.1f}")


if __name__ == "__main__":
    main()
