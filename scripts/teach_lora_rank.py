"""Teaching: what LoRA's rank r buys, what a trained update really looks like, and why merging is free.

    python -m scripts.teach_lora_rank --config configs/teach_lora_rank.yaml
    python -m scripts.teach_lora_rank --adapter_run demo     # a run under $LAB_OUTPUT_DIR/sft_alpaca/

LoRA freezes each weight W (d_out x d_in) and learns dW = scale * B @ A with
B (d_out x r), A (r x d_in), scale = alpha / r (alpha / sqrt(r) for rsLoRA).
This lesson (1) counts trained numbers, full vs LoRA, for every adapted layer
of the model at ranks 1..max_rank, from its config alone (a meta-device model,
no weights); (2) reads a real trained adapter and shows the singular values of
each dW: at most r are non-zero, and an energy threshold says how many matter;
(3) merges dW into W and checks that the merged model gives the unmerged
model's logits, and that W + scale * B @ A is exactly the merged weight.

The adapter is `adapter_run` (a run name or a path), else the newest finished
sft_alpaca run; when there is none, a tiny one is trained on the spot (a few
steps on the bundled sample: ~20-40 s on an idle 2-core CPU, longer on a busy one).

Writes to $LAB_OUTPUT_DIR/teach_lora_rank/<run_name>/: parameter_counts.png,
parameter_counts.csv, adapter_spectra.png, effective_rank.png, dense_spectrum.png,
adapter_ranks.csv, metrics.json, params.json.
"""

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lab_utils.teaching import lowrank
from lab_utils.core import plots
from lab_utils.export.adapters import base_model_name, find_adapter, layer_index, module_kind, read_lora_adapter
from lab_utils.core.artifacts import write_json
from lab_utils.core.config import run_cli, save_params
from lab_utils.models.registry import lora_target_modules, resolve_model
from lab_utils.core.paths import default_run_name, mark_complete, run_dir
from lab_utils.core.errors import ParamError


@dataclass(kw_only=True)
class Params:
    # whose layer shapes the parameter count uses (config only, no weights), and the model a demo adapter trains
    model: str = "smollm2-135m"
    table_ranks: list = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])  # ranks in the parameter-count table
    max_rank: int = 64  # the parameter plot runs over r = 1..max_rank
    adapter_run: str = ""  # run name under $LAB_OUTPUT_DIR/sft_alpaca/, a path, or "" = the newest finished run
    # when no adapter exists: a tiny sft_alpaca run trained on the spot
    demo_steps: int = 3  # when no adapter exists: steps of the tiny sft_alpaca run trained on the spot
    demo_lora_r: int = 8  # that run's LoRA rank
    demo_lora_alpha: int = 16  # that run's LoRA alpha
    energy_fraction: float = 0.9  # effective rank: fewest singular values keeping this much of sum(s_i^2)
    check_module: str = "model.layers.0.self_attn.q_proj"  # "" = the first adapted module
    prompt: str = "Give three tips for staying healthy."  # asked of base and adapted model
    run_name: str = ""  # empty: teach_lora_rank-<timestamp>
    overwrite: bool = False  # replace a finished run with this name


# ---------------------------------------------------------------- 1. parameter counts


def layer_shapes(model_name: str) -> pd.DataFrame:
    """One row per adapted module kind: its (d_out, d_in) and how many the model has.

    The model is built on the meta device: shapes and names without a byte of weights.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(resolve_model(model_name))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    targets = set(lora_target_modules(model))
    rows: dict = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module_kind(name) in targets:
            row = rows.setdefault(module_kind(name), {"module": module_kind(name), "d_out": module.out_features,
                                                      "d_in": module.in_features, "count": 0})
            row["count"] += 1
    return pd.DataFrame(list(rows.values()))


def parameter_table(shapes: pd.DataFrame, ranks) -> pd.DataFrame:
    """Trained numbers per layer: full fine-tuning, then LoRA at each rank; a last row for the whole set."""
    rows = []
    for s in shapes.itertuples():
        counts = lowrank.lora_parameter_counts((s.d_out, s.d_in), ranks)
        rows.append({"module": s.module, "shape": f"{s.d_out}x{s.d_in}", "layers": s.count, "full": counts[0]["full"],
                     **{f"r={c['rank']}": c["lora"] for c in counts},
                     "break_even_r": lowrank.lora_break_even_rank((s.d_out, s.d_in))})
    table = pd.DataFrame(rows)
    every = {"module": "all adapted (x layers)", "shape": "", "layers": int(table["layers"].sum()),
             "break_even_r": None}
    every.update({c: int((table[c] * table["layers"]).sum()) for c in ["full"] + [f"r={r}" for r in ranks]})
    return pd.concat([table, pd.DataFrame([every])], ignore_index=True)


def counts_by_rank(shapes: pd.DataFrame, max_rank: int) -> dict:
    """For the plot: module kind -> (full count, LoRA count at r = 1..max_rank), plus the whole adapted set."""
    ranks = list(range(1, max_rank + 1))
    curves = {s.module: (s.d_out * s.d_in, [lowrank.lora_parameter_count(s.d_out, s.d_in, r) for r in ranks])
              for s in shapes.itertuples()}
    total_full = int(sum(s.d_out * s.d_in * s.count for s in shapes.itertuples()))
    total_lora = [int(sum(lowrank.lora_parameter_count(s.d_out, s.d_in, r) * s.count for s in shapes.itertuples()))
                  for r in ranks]
    return {"ranks": ranks, "per_module": curves, "total": (total_full, total_lora)}


# ---------------------------------------------------------------- 2. a real adapter


def train_demo_adapter(p: Params) -> Path:
    """A tiny sft_alpaca run (a few steps on the bundled sample) so the lesson has a real dW to study."""
    from scripts import sft_alpaca

    demo = sft_alpaca.Params(model=p.model, max_rows=40, heldout_rows=2, max_steps=p.demo_steps, batch_size=4,
                             lora_r=p.demo_lora_r, lora_alpha=p.demo_lora_alpha, max_new_tokens=4,
                             max_seq_length=128, save_steps=1000, report_to="none", run_name="teach_lora_rank-demo",
                             warmup_ratio=0.0)  # no warm-up: even a 1-step demo must move B off zero
    print(f"[lab] no finished sft_alpaca run found: training a {p.demo_steps}-step demo adapter (~20-40 s on CPU)")
    return Path(sft_alpaca.run(demo)["run_dir"]) / "adapter"


def get_adapter(p: Params):
    folder = find_adapter(p.adapter_run) or train_demo_adapter(p)
    adapter = read_lora_adapter(folder)
    print(f"[lab] adapter {folder}: r={adapter.rank}, alpha={adapter.config['lora_alpha']}, "
          f"scale={adapter.scale:g}, {len(adapter.modules)} modules")
    return adapter


def adapter_ranks(adapter, energy_fraction: float) -> tuple[pd.DataFrame, dict]:
    """Per module: its r singular values, numerical rank (<= r) and energy-based effective rank."""
    rows, spectra = [], {}
    for module, (a, b) in adapter.modules.items():
        s = lowrank.lora_singular_values(a, b, adapter.scale)
        spectra[module] = s
        rows.append({"module": module, "kind": module_kind(module), "layer": layer_index(module),
                     "shape": f"{b.shape[0]}x{a.shape[1]}", "r": adapter.rank, "rank": lowrank.numerical_rank(s),
                     "effective_rank": lowrank.effective_rank(s, energy_fraction),
                     "norm": float(np.sqrt(np.sum(s**2))), "s1": float(s[0]), "s_last": float(s[-1])})
    return pd.DataFrame(rows), spectra


def pick_module(p: Params, adapter) -> str:
    module = p.check_module or next(iter(adapter.modules))
    if module not in adapter.modules:
        raise ParamError(f"check_module '{module}' is not adapted; choose one of e.g. {list(adapter.modules)[:3]}")
    return module


def dense_spectrum(adapter, module: str) -> dict:
    """Form one dW densely and take its full SVD: the singular values after the r-th drop to round-off."""
    a, b = adapter.modules[module]
    dense = lowrank.delta_weight(a, b, adapter.scale)
    s = np.linalg.svd(dense, compute_uv=False)
    r = adapter.rank
    round_off = max(dense.shape) * np.finfo(np.float64).eps  # numpy.linalg.matrix_rank's tolerance, without a 2nd SVD
    return {"module": module, "shape": list(dense.shape), "singular_values": s,
            "matrix_rank": lowrank.numerical_rank(s, rtol=round_off),
            "largest_beyond_r_over_s1": float(s[r] / s[0]) if len(s) > r else 0.0,
            "max_diff_vs_qr_route": float(np.max(np.abs(s[:r] - lowrank.lora_singular_values(a, b, adapter.scale))))}


# ---------------------------------------------------------------- 3. merging


@contextlib.contextmanager
def one_torch_thread():
    """Run tiny tensor work on one thread; restore the setting after.

    Merging is ~200 matmuls with inner size r, and the prompt is a few tokens: thread
    hand-off costs more than the arithmetic. On 2 shared cores we measured 210 such
    matmuls at 12.5 s with 2 threads and 0.14 s with 1.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def merge_check(p: Params, adapter, module: str) -> dict:
    """Logits of base, LoRA (unmerged) and merged models on one prompt; W + scale*B@A vs the merged weight."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model(base_model_name(adapter.folder, p.model))
    tokenizer = AutoTokenizer.from_pretrained(adapter.folder, clean_up_tokenization_spaces=False)
    base = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter.folder).eval()
    inputs = tokenizer(p.prompt, return_tensors="pt")
    w_before = base.get_submodule(module).base_layer.weight.detach().clone()  # merging writes into W in place
    a, b = (torch.from_numpy(m) for m in adapter.modules[module])
    with torch.no_grad(), one_torch_thread():
        with model.disable_adapter():
            base_logits = model(**inputs).logits
        lora_logits = model(**inputs).logits
        lora_params = sum(t.numel() for t in model.parameters())
        start = time.perf_counter()
        merged = model.merge_and_unload()
        merge_seconds = time.perf_counter() - start
        merged_logits = merged(**inputs).logits
        manual = w_before + adapter.scale * (b @ a)
        merged_weight = merged.get_submodule(module).weight
    return {
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "max_abs_diff_merged_vs_unmerged": float((merged_logits - lora_logits).abs().max()),
        "max_abs_change_adapter_vs_base": float((lora_logits - base_logits).abs().max()),
        "max_abs_diff_manual_vs_merged_weight": float((manual - merged_weight).abs().max()),
        "max_abs_delta_weight": float((merged_weight - w_before).abs().max()),
        "parameters_unmerged": int(lora_params), "parameters_merged": int(sum(t.numel() for t in merged.parameters())),
        "merge_seconds": round(merge_seconds, 3), "check_module": module,
    }


# ---------------------------------------------------------------- the whole lesson


def plot_parameter_counts(run: Path, counts: dict):
    return plots.plot_lora_parameter_counts(counts["ranks"], counts["per_module"], counts["total"],
                                            run / "parameter_counts.png")


def plot_adapter_spectra(run: Path, spectra: dict, adapter):
    return plots.plot_lora_spectra(spectra, adapter.rank, run / "adapter_spectra.png")


def plot_effective_ranks(run: Path, ranks_table: pd.DataFrame, adapter):
    return plots.plot_effective_rank(ranks_table.to_dict("records"), adapter.rank, run / "effective_rank.png")


def plot_dense_spectrum(run: Path, dense: dict, adapter):
    return plots.plot_singular_values(dense["singular_values"][: 4 * adapter.rank], run / "dense_spectrum.png",
                                      title=f"dW of {dense['module']} (first {4 * adapter.rank})")


def summarise(adapter, ranks_table: pd.DataFrame, dense: dict, merge: dict, energy_fraction: float) -> dict:
    by_kind = ranks_table.groupby("kind")["effective_rank"]
    return {
        "adapter": str(adapter.folder), "r": adapter.rank, "lora_alpha": adapter.config["lora_alpha"],
        "use_rslora": bool(adapter.config.get("use_rslora", False)), "scale": adapter.scale,
        "modules": len(ranks_table), "max_rank_seen": int(ranks_table["rank"].max()),
        "energy_fraction": energy_fraction,
        "effective_rank": {"min": int(ranks_table["effective_rank"].min()),
                           "max": int(ranks_table["effective_rank"].max()),
                           "mean": float(ranks_table["effective_rank"].mean()),
                           "mean_by_kind": {k: float(v) for k, v in by_kind.mean().items()}},
        "dense_check": {k: v for k, v in dense.items() if k != "singular_values"},
        "merge": merge,
    }


def start_run(p: Params) -> Path:
    run = run_dir("teach_lora_rank", p.run_name or default_run_name("teach_lora_rank"), overwrite=p.overwrite)
    save_params(p, run / "params.json")
    return run


def save_results(p: Params, run, table, adapter, ranks_table, dense, merge) -> dict:
    """CSV tables and metrics.json into the run folder (figures are saved where drawn); marks it complete last."""
    table.to_csv(run / "parameter_counts.csv", index=False)
    ranks_table.to_csv(run / "adapter_ranks.csv", index=False)
    metrics = summarise(adapter, ranks_table, dense, merge, p.energy_fraction)
    write_json(metrics, run / "metrics.json")
    mark_complete(run, {"max_rank_seen": metrics["max_rank_seen"], "r": adapter.rank})
    print(f"teach_lora_rank: r={adapter.rank}, rank(dW) <= {metrics['max_rank_seen']} "
          f"over {metrics['modules']} modules, "
          f"effective rank ({p.energy_fraction:.0%} energy) {metrics['effective_rank']['min']}.."
          f"{metrics['effective_rank']['max']}, merged vs unmerged max |logit diff| "
          f"{merge['max_abs_diff_merged_vs_unmerged']:.2e}; wrote {run}")
    return metrics


def run(p: Params) -> dict:
    run = start_run(p)
    shapes = layer_shapes(p.model)
    table = parameter_table(shapes, p.table_ranks)
    plot_parameter_counts(run, counts_by_rank(shapes, p.max_rank))
    adapter = get_adapter(p)
    ranks_table, spectra = adapter_ranks(adapter, p.energy_fraction)
    plot_adapter_spectra(run, spectra, adapter)
    plot_effective_ranks(run, ranks_table, adapter)
    module = pick_module(p, adapter)
    dense = dense_spectrum(adapter, module)
    plot_dense_spectrum(run, dense, adapter)
    merge = merge_check(p, adapter, module)
    plt.close("all")
    metrics = save_results(p, run, table, adapter, ranks_table, dense, merge)
    return {"run_dir": str(run), "parameter_table": table, "adapter_ranks": ranks_table, **metrics}


def main(argv=None):
    return run_cli(run, Params, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
