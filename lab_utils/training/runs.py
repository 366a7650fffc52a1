"""A run's life: its folder opened, its artifacts written, its completion marked.
"""

from pathlib import Path
from lab_utils.core.backend import Backend, choose_backend
from lab_utils.core.distributed import is_main_process, main_process_first
from lab_utils.training.lora import trainable_parameters


def run_metrics(outcome: dict, model, report, backend: Backend) -> dict:
    """The flat numbers every training run records: the outcome's scalars, backend, rows, trainable size."""
    scalars = {k: v for k, v in outcome.items() if not isinstance(v, (list, dict))}
    return {**scalars, "backend": backend.name, "device": backend.device, "rows_kept": report.kept,
            "rows_skipped": len(report.skipped), **{f"trainable_{k}": v for k, v in trainable_parameters(model).items()}}


def save_training_artifacts(p, run: Path, model, processor, outcome: dict, report, backend: Backend) -> dict:
    """Adapter (+ tokenizer or processor), skip report, history, its plot, answers sampled during training;
    returns the run's metrics.

    Under DDP every rank holds the same weights after training: only the main one writes.
    """
    import matplotlib.pyplot as plt

    from lab_utils.core import plots
    from lab_utils.core.artifacts import write_json

    metrics = run_metrics(outcome, model, report, backend)
    if not is_main_process():
        return metrics
    model.save_pretrained(run / "adapter")
    processor.save_pretrained(run / "adapter")
    report.write_csv(run / "skipped_rows.csv")
    write_json(outcome["history"], run / "history.json")
    if outcome.get("samples_during_training"):
        write_json(outcome["samples_during_training"], run / "samples_during_training.json")
    # on disk now; a notebook has drawn its own copy and must not show this one too
    plt.close(plots.plot_training(outcome["history"], run / "training.png", title=f"{p.model} LoRA r={p.lora_r}"))
    return metrics


def finish_run(run: Path, experiment: str, metrics: dict, headline: tuple = ()) -> None:
    """metrics.json, then the completion marker (with the headline numbers) last; main rank only."""
    from lab_utils.core.artifacts import write_json
    from lab_utils.core.paths import mark_complete
    from lab_utils.training.trainer import finish_trackers

    finish_trackers()
    if not is_main_process():
        return
    write_json(metrics, run / "metrics.json")
    mark_complete(run, {"experiment": experiment, **{k: metrics.get(k) for k in headline}})


def open_run(experiment: str, p) -> Path:
    """The run folder for these Params (refusing to overwrite a finished run), with params.json.

    The backend is checked first: a run it refuses (unsloth without a GPU, hf after unsloth
    patched this kernel) stops before leaving a folder behind."""
    from lab_utils.core.config import save_params
    from lab_utils.core.paths import run_dir
    from lab_utils.training.trainer import check_report_to

    choose_backend(p.backend)
    check_report_to(p.report_to)
    # Under DDP the main rank creates (or overwrites) the folder before the others look at it,
    # so every rank sees the same checkpoints when it decides whether to resume.
    with main_process_first():
        run = run_dir(experiment, p.run_name, overwrite=p.overwrite and is_main_process())
        if is_main_process():
            save_params(p, run / "params.json")
    return run
