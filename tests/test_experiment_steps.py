"""Every training experiment speaks one vocabulary: shared Params groups, the same steps in the same order."""

import ast
import dataclasses
import importlib
import inspect
import os
import textwrap
from pathlib import Path

import pytest

from lab_utils.training.params import AnswerParams, EvalParams, LoraParams, OptimParams, RunParams
from lab_utils.core.backend import Backend
from lab_utils.core.notebooks import NOTEBOOKS_DIR, code_cells
from lab_utils.training.trainer import training_arguments

TRAINING_EXPERIMENTS = ["sft_alpaca", "sft_medical", "grpo_gsm8k", "sft_vision", "preference"]
STEPS = ["load_data", "build_dataset", "setup_run", "load_model", "evaluate", "train", "save_artifacts", "run", "main"]
CPU = Backend("hf", "test", "cpu")


def experiment(name):
    return importlib.import_module(f"scripts.{name}")


@pytest.mark.parametrize("name", TRAINING_EXPERIMENTS)
def test_params_are_composed_of_the_shared_groups(name):
    params = experiment(name).Params
    for group in (RunParams, LoraParams, OptimParams, AnswerParams):
        assert issubclass(params, group), f"{name}.Params lacks {group.__name__}"
        assert {f.name for f in dataclasses.fields(group)} <= {f.name for f in dataclasses.fields(params)}


@pytest.mark.parametrize("name", TRAINING_EXPERIMENTS)
def test_steps_have_the_same_names_in_the_same_order(name):
    module = experiment(name)
    lines = [inspect.getsourcelines(getattr(module, step))[1] for step in STEPS]
    assert lines == sorted(lines), f"{name}: steps out of order: {sorted(zip(lines, STEPS))}"


def step_calls(tree, is_step) -> list[str]:
    """The step functions a piece of code calls, in the order they run (an argument's call runs first)."""
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and is_step(node.func)]
    calls.sort(key=lambda node: (node.end_lineno, node.end_col_offset))
    return [node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id for node in calls]


@pytest.mark.parametrize("name", TRAINING_EXPERIMENTS)
def test_the_notebook_calls_the_steps_in_the_order_run_does(name):
    module = experiment(name)
    steps = set(STEPS) - {"run", "main"} | {"warm_up"}
    in_run = step_calls(ast.parse(textwrap.dedent(inspect.getsource(module.run))),
                        lambda f: isinstance(f, ast.Name) and f.id in steps)
    in_notebook = []
    for source in code_cells(NOTEBOOKS_DIR / f"{name}.ipynb"):
        in_notebook += step_calls(ast.parse(source), lambda f: isinstance(f, ast.Attribute) and f.attr in steps
                                  and isinstance(f.value, ast.Name) and f.value.id == "experiment")
    assert in_run[:4] == ["load_data", "build_dataset", "setup_run", "load_model"], in_run
    assert in_notebook == in_run, f"{name}: the notebook runs {in_notebook}, run() runs {in_run}"


# Data that loads but cannot be used: each stops with one line before any run folder exists
# (the tokenizer is loaded for the length checks; the model is not).
def two_row_medical_csv(tmp_path):
    path = tmp_path / "two_rows.csv"
    rows = "ask,answer\n头痛怎么办？,多休息，多喝水，必要时就医。\n咳嗽两周了,建议去医院拍胸片检查。\n"
    path.write_text(rows, encoding="gbk")
    return {"data_file": str(path)}


UNUSABLE = {
    "sft_alpaca": lambda tmp_path: {"max_seq_length": 8},  # every answer starts beyond 8 tokens
    "sft_medical": two_row_medical_csv,  # too few rows for a train/validation/test split
    "grpo_gsm8k": lambda tmp_path: {"max_seq_length": 16},  # no worked solution fits the warm-up
    "sft_vision": lambda tmp_path: {"max_rows": 3, "heldout_rows": 3},  # nothing left to train on
    "preference": lambda tmp_path: {"max_seq_length": 8},  # every prompt fills max_seq_length
}


@pytest.mark.parametrize("name", TRAINING_EXPERIMENTS)
def test_unusable_data_stops_with_one_line_and_leaves_no_run_folder(name, tmp_path, capsys):
    argv = [arg for key, value in UNUSABLE[name](tmp_path).items() for arg in (f"--{key}", str(value))]
    with pytest.raises(SystemExit) as stop:
        experiment(name).main(argv + ["--report_to", "none"])
    message = str(stop.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    outputs = Path(os.environ["LAB_OUTPUT_DIR"])
    assert not outputs.exists() or not any(outputs.rglob("*")), sorted(outputs.rglob("*"))


@pytest.mark.parametrize("name", TRAINING_EXPERIMENTS)
def test_one_builder_maps_the_shared_fields_the_same_way(name, tmp_path):
    p = experiment(name).Params(max_steps=0, num_train_epochs=2.0, warmup_ratio=0.25, optim="adafactor",
                                max_grad_norm=0.5, learning_rate=1e-4, seed=7)
    args = training_arguments(p, tmp_path, CPU)
    # max_steps 0 means "train num_train_epochs", never transformers' default of 3 epochs
    assert args.max_steps == -1 and args.num_train_epochs == 2.0
    assert args.get_warmup_steps(100) == 25  # the float is read as a share of the steps
    assert (args.optim, args.max_grad_norm, args.learning_rate, args.seed) == ("adafactor", 0.5, 1e-4, 7)
    assert args.output_dir == str(tmp_path / "checkpoints")


def test_bad_warmup_and_eval_settings_are_one_clear_error(tmp_path):
    from scripts.sft_alpaca import Params

    with pytest.raises(ValueError, match="warmup_ratio"):
        training_arguments(Params(warmup_ratio=2.0), tmp_path, CPU)
    with pytest.raises(ValueError, match="needs eval_steps > 0"):
        training_arguments(Params(load_best=True), tmp_path, CPU)
    with pytest.raises(ValueError, match="multiple of"):
        training_arguments(Params(load_best=True, eval_steps=4, save_steps=10), tmp_path, CPU)
    args = training_arguments(Params(eval_steps=5, save_steps=10, load_best=True), tmp_path, CPU)
    assert (args.eval_strategy, args.eval_steps, args.load_best_model_at_end) == ("steps", 5, True)
    assert issubclass(Params, EvalParams)


def test_the_eval_loss_reads_at_most_eval_loss_rows():
    from datasets import Dataset

    from lab_utils.training.trainer import capped_rows

    rows = Dataset.from_dict({"i": list(range(10))})
    assert capped_rows(rows, 4)["i"] == [0, 1, 2, 3] and len(capped_rows(rows, 0)) == 10
    assert len(capped_rows(rows, 64)) == 10 and capped_rows(None, 4) is None
