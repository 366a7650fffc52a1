"""The longest sequence each backend can train one LoRA step on, same model, same GPU.

    python -m benchmarks.max_context                           # GPU: Qwen2.5-1.5B shape, all backends
    python -m benchmarks.max_context --model qwen2.5-7b --quant qlora4 --out
    python -m benchmarks.max_context --smoke                   # CPU, seconds: proves the harness

One step = forward, backward and an AdamW step on a single row of `length` tokens
(every token a label), gradient checkpointing on (what long-context training uses):
    hf           transformers + peft, model(input_ids, labels).loss: full logits for every position
    lab-hf       the lab's hf backend: lab_utils.training.lora.build_lora_model + token_losses (logits only
                 where a label follows; here that is every position, so this measures the model)
    lab-unsloth  the lab's Unsloth backend: FastLanguageModel, offloaded checkpointing, fused loss

Search: double from --start while a step fits, then bisect between the last length
that fit and the first that did not, down to --resolution tokens. A try that raises
torch.cuda.OutOfMemoryError counts as "does not fit"; the cache is emptied between
tries. --max_length caps the search (default: the model's max_position_embeddings);
a backend that reaches it is reported as ">= cap". Each backend runs in its own process.
"""

import argparse
import gc

from benchmarks.common import (MODEL_CONFIGS, SMOKE_MODEL, ensure_random_model, peak_memory_gib, ratio, report,
                               reset_peak_memory, run_case, skip_reasons)

BACKENDS = ["hf", "lab-hf", "lab-unsloth"]
COLUMNS = ["model", "quant", "backend", "max_length", "reached_cap", "peak_gib_at_max", "tries", "vs_hf", "status"]


def needs(backend: str, quant: str) -> list[str]:
    required = ["cuda", "unsloth"] if backend == "lab-unsloth" else []
    return required + (["cuda", "bitsandbytes"] if quant == "qlora4" else [])


def longest_fitting(fits, start: int, cap: int, resolution: int) -> tuple[int, list[tuple[int, bool]]]:
    """Largest length <= cap for which fits(length) is True (0 if not even `start`), and every try.

    Doubling finds a bracket [fits, does not fit] in log2 steps; bisection narrows it
    to `resolution`. Assumes fitting is monotone in length (true for memory).
    """
    tries = []

    def attempt(length):
        ok = fits(length)
        tries.append((length, ok))
        return ok

    if not attempt(min(start, cap)):
        return 0, tries
    good = min(start, cap)
    while good < cap:
        longer = min(good * 2, cap)
        if not attempt(longer):
            bad = longer
            break
        good = longer
    else:
        return good, tries
    while bad - good > resolution:
        middle = (good + bad) // 2
        if attempt(middle):
            good = middle
        else:
            bad = middle
    return good, tries


# ---------------------------------------------------------------- one backend (runs in a child process)

def load(model_dir: str, backend: str, quant: str, cap: int):
    """(model with LoRA, loss_of(input_ids) -> scalar) for the backend."""
    import torch

    if backend == "hf":
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM

        from lab_utils.models.registry import lora_target_modules
        from lab_utils.training.lora import quantization_config

        cuda = torch.cuda.is_available()
        quant_config = quantization_config(quant == "qlora4", False, "cuda" if cuda else "cpu")
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if cuda else torch.float32,
                                                     quantization_config=quant_config, attn_implementation="sdpa",
                                                     device_map={"": 0} if cuda else None)
        model.config.use_cache = False
        if quant_config is not None:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32,
                                                 target_modules=lora_target_modules(model.config)))
        return model, lambda ids: model(input_ids=ids, labels=ids, use_cache=False).loss

    name = backend.removeprefix("lab-")
    if name == "unsloth":
        from lab_utils.core.backend import import_unsloth

        import_unsloth()  # before lab_utils.training.params imports transformers: unsloth patches it
    from lab_utils.core.backend import get_backend
    from lab_utils.training.lora import build_lora_model
    from lab_utils.training.params import LoraSFTParams
    from lab_utils.training.loss import token_losses

    p = LoraSFTParams(model=model_dir, max_seq_length=cap, load_in_4bit=quant == "qlora4", gradient_checkpointing=True,
               precision="auto", lora_r=16, lora_alpha=32, backend=name)
    model, _ = build_lora_model(p, get_backend(name))
    if name == "unsloth":
        return model, lambda ids: model(input_ids=ids, labels=ids).loss  # Unsloth's fused, chunked loss

    def lab_loss(ids):
        positions = torch.arange(ids.shape[1], device=ids.device)[None]
        losses, _ = token_losses(model, {"input_ids": ids, "labels": ids, "position_ids": positions})
        return losses.mean()

    return model, lab_loss


def one_step_fits(model, loss_of, optimizer, length: int, vocab: int) -> tuple[bool, float | None]:
    """Train one step on `length` tokens; False if the GPU runs out of memory."""
    import torch

    device = next(p for p in model.parameters() if p.requires_grad).device
    reset_peak_memory()
    fits = True
    try:
        ids = torch.randint(0, vocab, (1, length), device=device)
        loss_of(ids).backward()
        optimizer.step()
    except torch.cuda.OutOfMemoryError:
        fits = False
    optimizer.zero_grad(set_to_none=True)
    ids = None  # drop every reference to this try's tensors before emptying the cache
    gc.collect()
    peak = peak_memory_gib()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    print(f"[bench] length {length}: {'fits' if fits else 'out of memory'}", flush=True)
    return fits, peak


def search_case(model_dir: str, backend: str, quant: str, start: int, cap: int, resolution: int) -> dict:
    model, loss_of = load(model_dir, backend, quant, cap)  # first: it imports unsloth before transformers
    import torch

    from lab_utils.models.registry import load_tokenizer

    vocab = len(load_tokenizer(model_dir))  # ids the tokenizer can produce, all inside the embedding
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    peaks = {}

    def fits(length):
        ok, peaks[length] = one_step_fits(model, loss_of, optimizer, length, vocab)
        return ok

    longest, tries = longest_fitting(fits, start, cap, resolution)
    return {"max_length": longest, "reached_cap": longest == cap, "peak_gib_at_max": peaks.get(longest),
            "tries": len(tries), "try_log": tries}


# ---------------------------------------------------------------- the sweep

def run_cases(a) -> list[dict]:
    rows, model_dir = [], None
    for backend in a.backends:
        row = {"model": a.model, "quant": a.quant, "backend": backend}
        skipped = skip_reasons(needs(backend, a.quant))
        if skipped:
            rows.append({**row, "status": f"skipped: {skipped}"})
            print(f"[bench] {a.model} {backend}: skipped ({skipped})", flush=True)
            continue
        model_dir = model_dir or ensure_random_model(a.model, a.tokenizer)
        print(f"[bench] {a.model} {a.quant} {backend}: searching {a.start}..{a.max_length} tokens", flush=True)
        outcome = run_case("benchmarks.max_context", "search_case",
                               dict(model_dir=model_dir, backend=backend, quant=a.quant, start=a.start,
                                    cap=a.max_length, resolution=a.resolution))
        rows.append({**row, **outcome.get("value", {}), "status": outcome["status"]})
    hf = next((r for r in rows if r["backend"] == "hf" and r["status"] == "ok"), {})
    for r in rows:
        r["vs_hf"] = ratio(r.get("max_length"), hf.get("max_length"))
    return rows


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny 2-layer model, short lengths (CPU is fine)")
    parser.add_argument("--model", default="qwen2.5-1.5b", choices=sorted(MODEL_CONFIGS))
    parser.add_argument("--quant", default="lora16", choices=["lora16", "qlora4"])
    parser.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    parser.add_argument("--start", type=int, default=1024)
    parser.add_argument("--max_length", type=int, default=None, help="cap (default: max_position_embeddings)")
    parser.add_argument("--resolution", type=int, default=256, help="stop bisecting when the bracket is this narrow")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder or hub id (default: the embedded SmolLM2)")
    parser.add_argument("--out", nargs="?", const="", default=None,
                        help="write JSON (default folder: benchmarks/results/)")
    a = parser.parse_args(argv)
    if a.smoke:
        a.model, a.start, a.max_length, a.resolution = SMOKE_MODEL, 32, 256, 16
    a.max_length = a.max_length or MODEL_CONFIGS[a.model]["max_position_embeddings"]
    return a


def main(argv=None) -> dict:
    a = parse(argv)
    rows = run_cases(a)
    return report("max_context", f"Longest trainable sequence: {a.model}, {a.quant}, one row, gradient checkpointing",
                  a, rows, COLUMNS)


if __name__ == "__main__":
    main()
