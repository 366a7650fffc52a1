"""Every training experiment speaks one vocabulary: shared Params groups, the same steps in the same order."""

import dataclasses
import importlib
import inspect

import pytest

from lab_utils.training.params import AnswerParams, EvalParams, LoraParams, OptimParams, RunParams
from lab_utils.training.trainer import training_arguments
from lab_utils.core.backend import Backend

TRAINING_EXPERIMENTS = ["sft_alpaca", "sft_medical", "grpo_gsm8k", "sft_vision", "preference"]
STEPS = ["load_data", "setup_run", "load_model", "build_dataset", "evaluate", "train", "save_artifacts", "run", "main"]
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


@pytest.mark.parametrize("name", TRAINING_EXPERIMENTS)
def test_run_reads_the_data_before_it_creates_the_run_folder(name):
    source = inspect.getsource(experiment(name).run)
    assert source.index("load_data(p)") < source.index("setup_run(p)")


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
