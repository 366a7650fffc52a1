"""A run's life: its folder opened, its artifacts written, its completion marked.
"""

from pathlib import Path
from lab_utils.core.backend import Backend, choose_backend
from lab_utils.core.distributed import check_launch, is_main_process, main_process_first
from lab_utils.training.lora import trainable_parameters


def run_metrics(outcome: dict, model, report, backend: Backend) -> dict:
    """The flat numbers every training run records: the outcome's scalars, backend, rows, trainable size."""
    scalars = {k: v for k, v in outcome.items() if not isinstance(v, (list, dict))}
    return {
        **scalars,
        "backend": backend.name,
        "device": backend.device,
        "rows_kept": report.kept,
        "rows_skipped": len(report.skipped),
        **{f"trainable_{k}": v for k, v in trainable_parameters(model).items()},
    }


def save_training_artifacts(p, run: Path, model, processor, outcome: dict, report, backend: Backend) -> dict:
    """Adapter (+ tokenizer or processor), skip report, history, its plot, answers sampled during training;
    returns the run's metrics.

    Under DDP every rank holds the same weights after training: only the main one writes. Under
    FSDP each rank holds shards: every rank joins the gather, then the main one writes.
    """
    import matplotlib.pyplot as plt

    from lab_utils.core import plots
    from lab_utils.core.artifacts import write_json
    from lab_utils.core.paths import write_then_rename

    metrics = run_metrics(outcome, model, report, backend)
    record_sharding(model, run)
    full_state = gathered_state_dict(model)
    if not is_main_process():
        return metrics
    with write_then_rename(run / "adapter", overwrite=True) as staging:  # a kill mid-save leaves no half adapter
        model.save_pretrained(staging, state_dict=full_state)
        processor.save_pretrained(staging)
    report.write_csv(run / "skipped_rows.csv")
    write_json(outcome["history"], run / "history.json")
    if outcome.get("samples_during_training"):
        write_json(outcome["samples_during_training"], run / "samples_during_training.json")
    # on disk now; a notebook has drawn its own copy and must not show this one too
    plt.close(plots.plot_training(outcome["history"], run / "training.png", title=f"{p.model} LoRA r={p.lora_r}"))
    return metrics


def gathered_state_dict(model) -> dict | None:
    """The whole model's state dict on the main rank when FSDP holds DTensor shards, else None (the model's own).

    A collective: every rank must call it. Only rank 0 keeps the (CPU) copy; peft then picks the adapter.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.tensor import DTensor

    if not any(isinstance(w, DTensor) for w in model.parameters()):
        return None
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def record_sharding(model, run: Path) -> None:
    """With LAB_SHARDING_REPORT=1, each rank writes sharding/rank<N>.json: what FSDP/DDP actually did to its
    model (FSDP units, DTensor parameters, local vs full sizes). The tests read it: a launcher that quietly
    fell back to plain data parallel shows up as zero FSDP units and full-size local parameters."""
    import os

    if os.environ.get("LAB_SHARDING_REPORT") != "1":
        return
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    from lab_utils.core.artifacts import write_json
    from lab_utils.core.distributed import global_rank, launch_engine, world_size

    for unit in model.modules():  # units left gathered after the last forward (FSDP2 keeps the root's) go back
        if isinstance(unit, FSDPModule):
            unit.reshard()
    params = list(model.named_parameters())
    local = {n: (w.to_local() if isinstance(w, DTensor) else w).numel() for n, w in params}
    trainable = [n for n, w in params if w.requires_grad]
    write_json(
        {
            "rank": global_rank(),
            "world_size": world_size(),
            "engine": launch_engine(),
            "fsdp_units": sorted(n or "<root>" for n, m in model.named_modules() if isinstance(m, FSDPModule)),
            "dtensor_params": sum(isinstance(w, DTensor) for _, w in params),
            "params": len(params),
            "not_sharded": [n for n, w in params if not isinstance(w, DTensor)],
            "local_numel": sum(local.values()),
            "full_numel": sum(w.numel() for _, w in params),
            "trainable_local_numel": sum(local[n] for n in trainable),
            "trainable_full_numel": sum(w.numel() for n, w in params if n in trainable),
        },
        run / "sharding" / f"rank{global_rank()}.json",
    )


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

    The backend and the launch are checked first: a run they refuse (unsloth without a GPU, hf after
    unsloth patched this kernel, Unsloth or 4-bit under FSDP/ZeRO-3) stops before leaving a folder behind."""
    from lab_utils.core.config import save_params
    from lab_utils.core.paths import run_dir
    from lab_utils.training.trainer import check_report_to

    backend = choose_backend(p.backend)
    check_launch(backend.name, getattr(p, "load_in_4bit", False), getattr(p, "load_in_8bit", False), experiment)
    check_report_to(p.report_to)
    # Under DDP the main rank creates (or overwrites) the folder before the others look at it,
    # so every rank sees the same checkpoints when it decides whether to resume.
    with main_process_first():
        # the main rank locks the folder first: a second run with this name stops here, folder untouched
        run = run_dir(experiment, p.run_name, overwrite=p.overwrite and is_main_process(), lock=is_main_process())
        if is_main_process():
            save_params(p, run / "params.json")
    return run
