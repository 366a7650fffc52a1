"""lab_utils: the library every experiment script and notebook calls, in rooms. One module per concern.

Imports flow one way: scripts/ and benchmarks/ use lab_utils/; nothing here imports scripts/ or
benchmarks/, and no script imports a benchmark (tests/test_layout.py checks this index, the rooms and the module sizes).

core/        the run core
    paths         every directory from env vars (LAB_HOME, LAB_MODELS_DIR, LAB_DATA_DIR, LAB_OUTPUT_DIR),
                  run folders and their completion marker, write_then_rename for anything written atomically
    config        Params dataclass <-> flat YAML <-> command line; each knob's help from its comment (--help,
                  --print_config, notebooks); run_cli: a script's main() with one-line errors
    knob_checks   knob values that can never work (a negative length, an unknown choice), refused in one line
    errors        LabError, the base of the lab's own errors (ConfigError, DataError, ParamError, MachineError...)
    text_decoding the one decoder for text files and configs: BOM, UTF-8, UTF-16, GB18030/GBK, Big5
    artifacts     what a run writes: JSON (write_json), tables as Markdown + CSV, logging setup
    backend       Unsloth or transformers + peft, chosen once per process with the reason; import_unsloth
    distributed   torchrun / accelerate launch: which rank writes files, who waits for whom
    progress      one progress bar per long step (training, evaluation, downloads, conversions)
    machine       the device and package versions, peak memory (counted or polled), one call per process
    notebooks     read a notebook's parameters cell; run a notebook headless with papermill
    plots         every figure the lab draws, so notebooks and scripts show the same plots
    secrets       which variables and fields hold credentials (HF_TOKEN, ...); masking them in what is written
    locks         one process per run folder: the run lock (pid, host, since), stale ones taken over
    jupyter_lab   `make lab`'s JupyterLab command line (no first-run popup), and headless for tests/screenshots
    browser       headless Chromium (selenium) driving JupyterLab as a person does: edit, Run All, read outputs

models/      models and chat
    registry      the model registry, the embedded SmolLM2 (GGUF -> cached safetensors, versioned),
                  Hugging Face / ModelScope hubs, tokenizer loading, LoRA target modules per architecture
    chat          chat templates in one place: render conversations, assistant-only labels, batched generation
    random_models real model shapes with random weights, for GPU checks and benchmarks without network
    gguf_reading  GGUF files loaded through transformers, their metadata parsed once (load_gguf_model)

training/    the training core
    params        the shared Params groups (RunParams, LoraParams, OptimParams, EvalParams) every
                  experiment's knobs come from
    lora          a base model with LoRA attached on either backend; precision, 4/8-bit quantisation
    batching      tokenised conversations; padding-free or padded batches
    loss          the label-positions-only loss (LabTrainer): the vocabulary projection only where a label is
    steps         what an experiment's steps hand each other: Data, LoadedModel
    trainer       the one TrainingArguments builder, the one trainer builder for every training kind,
                  resume-and-time, loss history
    checkpoints   the newest whole checkpoint to resume from; damaged ones (cut short, empty, missing) skipped
    runs          a run's folder opened (backend checked first), its artifacts written, completion marked
    preference    DPO/ORPO/SimPO/KTO held-out scoring: preference accuracy and reward margins
    rollouts      GRPO completions: vLLM wherever it is installed (TRL's rollout_func), else HF generate
    vllm_engine   a vLLM engine in this process (CPU or CUDA): the adapter being trained served each step,
                  greedy grading, one-line errors (KV cache, architecture, not installed)
    vllm_cpu_weights  the policy merged into a CPU vLLM engine's own weights at each publish (no LoRA kernels)

vision/      vision-language
    processor     the Qwen2.5-VL chat template, vision special tokens, an image-only processor (no torchvision)
    model         the tiny random CPU Qwen2.5-VL built from a config; loading on either backend
    collator      image rows -> tensors with only the answer labelled; TRL settings for image rows
    lora          LoRA on the language and/or vision tower (Unsloth's switches), fully trained modules
    answers       greedy answers to images, exact match and character accuracy

export/      export and serving
    adapters      a saved LoRA adapter as plain (A, B) matrices; the one "is this an adapter folder" rule;
                  the newest finished sft_alpaca run
    merge         where a run's adapter is (locate_adapter); merging it into 16-bit safetensors, text or vision
    gguf          GGUF through llama.cpp's own converter, k-quants, the Ollama Modelfile
    hub           hub upload (dry run by default)
    ollama_templates  Ollama Modelfile templates per model family (ChatML, Qwen3, Llama 3, Gemma,
                  Mistral v1/v3), checked against the tokenizer's own template
    go_template   the small Go text/template renderer ollama_templates checks with

evaluation/  evaluation
    evaluate      base vs tuned answers, text metrics, perplexity, the A/B report; several adapters on one base
    metrics       BLEU-4 and ROUGE-1/2/L (0..100), per sample and overall

teaching/    the lessons' maths
    lowrank       NumPy low-rank maths: truncated SVD, Eckart-Young, LoRA counts and spectra
    als           ALS matrix factorisation (biases, weighted ridge), baselines, choosing rank by validation
    spark_als     the same ALS on Spark MLlib, for comparison with als
"""

import os as _os

# accelerate imports DeepSpeed whenever it is installed (make setup-deepspeed), and DeepSpeed then warns
# "Setting accelerator to CPU" on every CPU-only machine, in every run. Where no NVIDIA device exists, say
# so up front; a GPU box (or a user's own DS_ACCELERATOR) is left to DeepSpeed's own detection.
if not _os.path.exists("/dev/nvidiactl") and not _os.environ.get("CUDA_VISIBLE_DEVICES"):
    _os.environ.setdefault("DS_ACCELERATOR", "cpu")
