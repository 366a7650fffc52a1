"""Preference tuning with LoRA: DPO, ORPO or SimPO on (prompt, chosen, rejected) pairs; KTO on thumbs-up/down rows.

    python -m scripts.preference --config configs/preference.yaml
    python -m scripts.preference --config configs/preference.yaml --method orpo --max_steps 10
    python -m scripts.preference --config configs/preference.yaml --method simpo --beta 2.0
    python -m scripts.preference --config configs/preference.yaml --method kto --data_file preference_unpaired.jsonl
    papermill notebooks/preference.ipynb out.ipynb -f configs/preference_gpu.yaml

After SFT has taught a model to answer, preference tuning teaches it which of two answers
to give. DPO (TRL's DPOTrainer; Unsloth's patched one on a CUDA box with unsloth) raises the
log-probability of the chosen answer relative to a frozen reference (the model as training
started) and lowers the rejected one's; `beta` sets how far it may move. ORPO (TRL's
experimental ORPOTrainer) needs no reference: an SFT loss on the chosen answer plus an
odds-ratio term (weight `beta`) against the rejected one. SimPO (TRL's CPOTrainer, loss_type
"simpo") needs no reference either: it trains the length-normalised log-prob (times `beta`, 2-10 in
the paper) of the chosen answer above the rejected one's by a margin `simpo_gamma`. KTO (TRL's
KTOTrainer) learns from unpaired answers, each labelled desirable or not (the feedback people
actually collect); a file of pairs becomes such rows when `kto_from_pairs` is on (each pair -> one
desirable and one undesirable row). `init_from` starts from a finished SFT run's adapter (the usual
SFT -> DPO pipeline) instead of a fresh LoRA.

Measured on held-out pairs (KTO: rows) before and after training (lab_utils/training/preference.py):
preference accuracy (DPO: implicit reward of chosen > rejected; ORPO: log odds of chosen > rejected;
SimPO: length-normalised reward of chosen > rejected; KTO: implicit reward of the sign the label asks
for) and the mean margin, plus greedy answers to held-out prompts. Defaults are the CPU demo: the
embedded SmolLM2-135M and the bundled 200-pair zh/en sample (concise and correct vs rambling
or wrong). Each run writes to $LAB_OUTPUT_DIR/preference/<run_name>/: adapter/, checkpoints/,
tensorboard/, params.json, metrics.json, history.json, training.png, rewards.png, margins.png,
pairs.md/.csv, answers.md/.csv, skipped_rows.csv, run_complete.json.
"""

import os
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from data_loaders.common import rows_left, split_heldout
from data_loaders.preference import load_preference_file, unpair
from lab_utils.core import plots
from lab_utils.export.adapters import check_adapter_base, find_adapter, start_from_adapter
from lab_utils.core.artifacts import setup_logging, write_table
from lab_utils.models.chat import generate, render
from lab_utils.core.config import run_cli
from lab_utils.core.distributed import is_main_process
from lab_utils.core.paths import find_data_file
from lab_utils.training.preference import preference_summary, score_pairs, score_unpaired
from lab_utils.training.params import EvalParams, LoraParams, OptimParams, RunParams
from lab_utils.training.steps import Data, LoadedModel
from lab_utils.training.trainer import build_trainer, run_trainer, training_arguments
from lab_utils.training.runs import finish_run, open_run, save_training_artifacts
from lab_utils.training.batching import load_data_tokenizer
from lab_utils.training.lora import load_lora_model
from lab_utils.core.errors import ParamError

EXPERIMENT = "preference"
METHODS = ("dpo", "orpo", "simpo", "kto")
# what each method's held-out accuracy and margin measure (lab_utils/training/preference.py)
MEASURES = {"dpo": "implicit reward", "orpo": "log odds ratio", "simpo": "length-normalised reward",
            "kto": "implicit reward, signed by the label"}


@dataclass(kw_only=True)
class Params(RunParams, LoraParams, OptimParams, EvalParams):
    # data and method (the model, LoRA, optimisation, evaluation and run knobs: the shared groups of
    # lab_utils.training.params)
    data_file: str = "preference_sample.jsonl"  # under LAB_DATA_DIR or data/samples/
    system_prompt: str = ""  # added to every prompt that has none ("" = the model's default)
    max_rows: int = 0  # 0 = every pair
    heldout_rows: int = 16  # pairs (or KTO rows) kept out of training: preference accuracy and margin before/after
    answer_rows: int = 4  # held-out prompts answered (greedy) before and after training
    method: str = "dpo"  # dpo | orpo | simpo (no reference, length-normalised) | kto (unpaired thumbs-up/down rows)
    beta: float = 0.1  # DPO/KTO: how far from the reference (higher = closer); ORPO: odds-ratio weight; SimPO: 2-10
    simpo_gamma: float = 0.5  # SimPO: the margin its chosen reward must beat the rejected one by
    kto_from_pairs: bool = True  # method kto on a file of pairs: each pair -> a desirable + an undesirable row
    init_from: str = ""  # "" = a fresh LoRA; else a finished SFT run (name under sft_alpaca/, run or adapter folder)
    # preference tuning's own defaults: each pair is two sequences (plus DPO's reference pass), so a CPU step
    # holds 4 pairs; 8 steps (32 pairs: held-out accuracy 0.50 -> 0.94, under 3 minutes on 2 CPU cores)
    # keep the CPU demo short; a learning rate DPO tolerates on a LoRA
    learning_rate: float = 1e-4  # peak learning rate
    batch_size: int = 4
    max_steps: int = 8
    # max_seq_length (shared, 256): prompt + answer; longer answers are cut, longer prompts skipped


# Every experiment has the same steps, in this order (tests/test_experiment_steps.py checks it):
# load_data, build_dataset, setup_run, load_model, evaluate, train, save_artifacts, run, main.


def check_params(p: Params) -> None:
    """Mistakes that would otherwise surface deep inside TRL, or after the model has loaded."""
    if p.method not in METHODS:
        raise ParamError(f"method={p.method!r}: expected one of {', '.join(METHODS)}")
    if p.beta <= 0:
        raise ParamError(f"beta={p.beta}: expected a positive number (DPO's KL strength, ORPO's odds-ratio weight)")
    if p.method == "kto" and p.batch_size < 2:
        raise ParamError("method kto needs batch_size >= 2: its KL reference point comes from the batch's other rows")
    if p.init_from:
        check_adapter_base(find_adapter(p.init_from), p.model)


def load_data(p: Params) -> Data:
    """Train rows, held-out rows and the skip report: read, checked and split before any run folder exists.
    Pairs for DPO/ORPO/SimPO; unpaired rows for KTO (a file of pairs is split first, then unpaired, so a
    pair's two answers stay on the same side of the split)."""
    check_params(p)
    rows, report = load_preference_file(p.data_file, system_prompt=p.system_prompt or None, limit=p.max_rows or None)
    unpaired = "label" in rows.column_names
    if unpaired and p.method != "kto":
        raise ParamError(
            f"{p.data_file}: unpaired rows (prompt/completion/label) need method kto; "
            f"{p.method} learns from pairs (prompt/chosen/rejected)"
        )
    if p.method == "kto" and not unpaired and not p.kto_from_pairs:
        raise ParamError(
            f"{p.data_file}: method kto needs unpaired rows (prompt/completion/label), this file holds "
            "pairs; set kto_from_pairs: true to make each pair a desirable and an undesirable row"
        )
    train, heldout = split_heldout(rows, p.heldout_rows, p.seed, find_data_file(p.data_file))
    if p.method == "kto" and not unpaired:
        train, heldout = unpair(train), unpair(heldout)
        print(
            f"[lab] kto_from_pairs: {len(train) // 2} + {len(heldout) // 2} pairs -> {len(train)} + {len(heldout)} "
            "unpaired rows (chosen = desirable, rejected = undesirable)"
        )
    if p.method == "kto":
        # TRL's KTO reads rows in order (its KL estimate pairs each row with a neighbour's answer): shuffle, seeded,
        # so a batch mixes prompts and labels instead of holding a pair's two answers side by side; the held-out
        # rows too, so the answers shown before/after are to different prompts
        train, heldout = train.shuffle(seed=p.seed), heldout.shuffle(seed=p.seed)
    return Data(train=train, heldout=heldout, report=report)


def prompt_tokens(tokenizer, prompt: list[dict]) -> int:
    return len(tokenizer(render(tokenizer, prompt, add_generation_prompt=True), add_special_tokens=False)["input_ids"])


def build_dataset(p: Params, data: Data) -> Data:
    """The training pairs that fit, by the model's tokenizer (not the model), before any run folder exists.
    A pair whose prompt alone fills max_seq_length has no answer token left to compare: it is skipped and
    reported (TRL would drop it silently); none left stops the run here."""
    tokenizer = load_data_tokenizer(p)
    report = data.report
    fits = [prompt_tokens(tokenizer, prompt) < p.max_seq_length for prompt in data.train["prompt"]]
    for source, ok in zip(data.train["source"], fits):
        if not ok:
            report.skip(source, None, "prompt beyond max_seq_length", f"max_seq_length={p.max_seq_length}")
    report.kept -= fits.count(False)
    train_rows = rows_left(
        data.train.select([i for i, ok in enumerate(fits) if ok]),
        find_data_file(p.data_file),
        f"the length filter (every prompt fills max_seq_length={p.max_seq_length})",
        "raise max_seq_length or shorten the prompts",
    )
    unit = "rows" if p.method == "kto" else "pairs"
    print(f"[lab] {p.data_file}: {report.summary()}; {len(train_rows)} train {unit}, {len(data.heldout)} held out")
    # with eval_steps > 0 the trainer also logs its loss and rewards on the held-out rows
    eval_set = data.heldout.select_columns(method_columns(p)) if p.eval_steps > 0 and len(data.heldout) else None
    return replace(data, train=train_rows, eval_set=eval_set)


def method_columns(p: Params) -> list[str]:
    """The columns the method's TRL trainer reads: KTO's unpaired rows, or the pairs."""
    return ["prompt", "completion", "label"] if p.method == "kto" else ["prompt", "chosen", "rejected"]


def describe_row(tokenizer, row) -> str:
    """A held-out row as the model sees it: the prompt and one answer rendered, then the other answer (pairs)
    or the answer's label (KTO)."""
    if "chosen" in row:
        return render(tokenizer, row["prompt"] + row["chosen"]) + f"\nrejected: {row['rejected'][0]['content']}"
    label = "desirable" if row["label"] else "undesirable"
    return render(tokenizer, row["prompt"] + row["completion"]) + f"\nlabel: {label}"


def setup_run(p: Params) -> Path:
    return open_run(EXPERIMENT, p)


def load_model(p: Params) -> LoadedModel:
    """The LoRA model, tokenizer and backend: a fresh LoRA, or the adapter of the SFT run named by init_from."""
    model, tokenizer, backend = load_lora_model(p)
    if p.init_from:
        model = start_from_adapter(model, p.init_from, p.model)
    return LoadedModel(model, tokenizer, backend)


def evaluate(p: Params, lm: LoadedModel, data: Data) -> dict:
    """Log-probs of every held-out pair's two answers (KTO: each row's one), and greedy answers to the first
    answer_rows prompts."""
    score = score_unpaired if p.method == "kto" else score_pairs
    scores = score(lm.model, lm.tokenizer, data.heldout, max_length=p.max_seq_length, batch_size=p.batch_size)
    answers = generate(lm.model, lm.tokenizer, data.heldout["prompt"][: p.answer_rows], max_new_tokens=p.max_new_tokens)
    return {"scores": scores, "answers": answers}


def preference_trainer(method: str, backend):
    """(config class, trainer class) of TRL for the method; Unsloth's DPO patch first on its backend."""
    if method == "dpo":
        if backend.is_unsloth:  # only ever chosen on a CUDA box that has unsloth (lab_utils.core.backend)
            from unsloth import PatchDPOTrainer

            PatchDPOTrainer()
        from trl import DPOConfig, DPOTrainer

        return DPOConfig, DPOTrainer
    if method == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOConfig, KTOTrainer
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ORPO and CPO (SimPO) live in trl.experimental (TRL 1.14)
    if method == "simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        return CPOConfig, CPOTrainer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    return ORPOConfig, ORPOTrainer


def method_arguments(p: Params) -> dict:
    """The method's own TRL config fields, on top of the shared ones (training_arguments)."""
    simpo = {
        "loss_type": "simpo",
        "simpo_gamma": p.simpo_gamma,
        "cpo_alpha": 0.0,
    }  # 0: SimPO alone (CPO's default 1.0 adds an SFT term on the chosen answer)
    return {
        "beta": p.beta,
        "max_length": p.max_seq_length,
        **(simpo if p.method == "simpo" else {}),
        # ORPO's and CPO's batches hold chosen_/rejected_input_ids, no input_ids to count
        "include_num_input_tokens_seen": "non_padding" if p.method in ("dpo", "kto") else "no",
    }


def train(p: Params, lm: LoadedModel, data: Data, run_dir: Path) -> dict:
    """DPO, ORPO, SimPO or KTO steps (resuming from the run's last checkpoint); every logged record kept."""
    config_class, trainer_class = preference_trainer(p.method, lm.backend)
    args = training_arguments(p, run_dir, lm.backend, config_class, **method_arguments(p))
    trainer, history = build_trainer(
        p,
        trainer_class,
        lm.model,
        args,
        data.train.select_columns(method_columns(p)),
        data.eval_set,
        processing_class=lm.tokenizer,
    )
    return {**run_trainer(p, trainer, history, run_dir, loss_before_after=False), "method": p.method}


def compare(p: Params, heldout, before: dict, after: dict) -> tuple[dict, pd.DataFrame]:
    """(metrics, per-pair table): accuracy and margin before and after; the reference is the model before training."""
    start = before["scores"]
    first = preference_summary(start, start, p.method, p.beta)
    last = preference_summary(after["scores"], start, p.method, p.beta)
    metrics = {"preference_measure": MEASURES[p.method]}
    for when, summary in (("before", first), ("after", last)):
        metrics.update(
            {
                f"preference_accuracy_{when}": summary["accuracy"],
                f"preference_margin_{when}": summary["margin"],
                f"likelihood_accuracy_{when}": summary["likelihood_accuracy"],
            }
        )
    answers = (
        {"completion": [a[0]["content"] for a in heldout["completion"]], "label": heldout["label"]}
        if p.method == "kto"
        else {
            "chosen": [a[0]["content"] for a in heldout["chosen"]],
            "rejected": [a[0]["content"] for a in heldout["rejected"]],
        }
    )
    table = pd.DataFrame(
        {
            "prompt": [prompt[-1]["content"] for prompt in heldout["prompt"]],
            **answers,
            "margin_before": [round(m, 4) for m in first["margins"]],
            "margin_after": [round(m, 4) for m in last["margins"]],
        }
    )
    return metrics, table


def good_answer(row) -> str:
    """The answer a held-out row holds up as good: the chosen one, or a desirable KTO completion ("" if not)."""
    if "chosen" in row:
        return row["chosen"][0]["content"]
    return row["completion"][0]["content"] if row["label"] else ""


def answers_table(heldout, before: dict, after: dict) -> pd.DataFrame:
    n = len(before["answers"])
    return pd.DataFrame(
        {
            "prompt": [prompt[-1]["content"] for prompt in heldout["prompt"][:n]],
            "chosen": [good_answer(heldout[i]) for i in range(n)],
            "before": before["answers"],
            "after": after["answers"],
        }
    )


def save_artifacts(
    p: Params,
    run_dir: Path,
    lm: LoadedModel,
    data: Data,
    outcome: dict,
    scores: dict,
    pairs: pd.DataFrame,
    answers: pd.DataFrame,
) -> dict:
    metrics = save_training_artifacts(p, run_dir, lm.model, lm.tokenizer, outcome, data.report, lm.backend)
    metrics.update(scores)
    if is_main_process():  # one rank writes (DDP)
        import matplotlib.pyplot as plt

        write_table(pairs, run_dir, "pairs")
        write_table(answers, run_dir, "answers")
        plt.close(
            plots.plot_preference_rewards(outcome["history"], run_dir / "rewards.png", title=f"{p.model} {p.method}")
        )
        plt.close(
            plots.plot_preference_margins(
                pairs["margin_before"],
                pairs["margin_after"],
                run_dir / "margins.png",
                measure=scores["preference_measure"],
                accuracy=(scores["preference_accuracy_before"], scores["preference_accuracy_after"]),
            )
        )
    finish_run(
        run_dir, EXPERIMENT, metrics, headline=("method", "preference_accuracy_before", "preference_accuracy_after")
    )
    return metrics


def run(p: Params) -> dict:
    data = build_dataset(p, load_data(p))
    run_dir = setup_run(p)
    lm = load_model(p)
    before = evaluate(p, lm, data)
    outcome = train(p, lm, data, run_dir)
    after = evaluate(p, lm, data)
    scores, pairs = compare(p, data.heldout, before, after)
    answers = answers_table(data.heldout, before, after)
    metrics = save_artifacts(p, run_dir, lm, data, outcome, scores, pairs, answers)
    print(f"[lab] done: {run_dir}")
    return {"run_dir": str(run_dir), "metrics": metrics, "pairs": pairs, "answers": answers}


def main(argv=None):
    setup_logging()
    result = run_cli(run, Params, argv, description=__doc__)
    m = result["metrics"]
    print(
        f"{m['method']}: held-out preference accuracy {m['preference_accuracy_before']} -> "
        f"{m['preference_accuracy_after']}, margin {m['preference_margin_before']} -> {m['preference_margin_after']} "
        f"({m['preference_measure']}); {m['steps_trained']} steps in {m['train_seconds']} s"
    )
    print(result["answers"].head(3).to_string(index=False))


if __name__ == "__main__":
    main()
