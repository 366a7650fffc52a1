"""lab_utils: the library every experiment script and notebook calls. One module per concern.

Where things are (flat; imports flow from scripts/ into here, never back):

    paths         every directory from env vars (LAB_HOME, LAB_MODELS_DIR, LAB_DATA_DIR, LAB_OUTPUT_DIR),
                  run folders and their completion marker, write_then_rename for anything written atomically
    config        Params dataclass <-> flat YAML <-> command line; run_cli: a script's main() with one-line errors
    artifacts     what a run writes: JSON (write_json), tables as Markdown + CSV, logging setup
    backend       Unsloth or transformers + peft, chosen once per process with the reason; import_unsloth
    distributed   torchrun / accelerate launch: which rank writes files, who waits for whom
    models        the model registry, the embedded SmolLM2 (GGUF -> cached safetensors, versioned),
                  Hugging Face / ModelScope hubs, tokenizer loading, LoRA target modules per architecture
    training      the training core: the shared Params groups (RunParams, LoraParams, OptimParams, EvalParams)
                  every experiment's knobs come from, model + LoRA, tokenised batches, the one TrainingArguments
                  builder, the trainer, resume-and-time, artifacts every run writes
    rollouts      GRPO completions: vLLM when possible, else HF generate
    vision_processor  the Qwen2.5-VL chat template, vision special tokens, an image-only processor (no torchvision)
    vision_model  the tiny random CPU Qwen2.5-VL built from a config; loading on either backend
    vision_collator   image rows -> tensors with only the answer labelled; TRL settings for image rows
    vision_lora   LoRA on the language and/or vision tower (Unsloth's switches), fully trained modules
    vision_answers    greedy answers to images, exact match and character accuracy
    chat          chat templates in one place: render conversations, assistant-only labels, batched generation
    chat_templates    Ollama Modelfile templates per model family (ChatML, Llama 3, Gemma, Mistral), checked
                  against the tokenizer's own template
    go_template   the small Go text/template renderer chat_templates checks with
    evaluate      base vs tuned answers, text metrics, perplexity, the A/B report; several adapters on one base
    metrics       BLEU-4 and ROUGE-1/2/L (0..100), per sample and overall
    adapters      a saved LoRA adapter as plain (A, B) matrices; the one "is this an adapter folder" rule;
                  the newest finished sft_alpaca run
    export        merge a text or vision LoRA into 16-bit safetensors, GGUF (llama.cpp's converter), k-quants,
                  Ollama Modelfile, hub upload
    lowrank       NumPy low-rank maths for the lessons: truncated SVD, Eckart-Young, ALS, LoRA counts and spectra
    spark_als     the same ALS on Spark MLlib, for comparison with lowrank
    plots         every figure the lab draws, so notebooks and scripts show the same plots
    notebooks     read a notebook's parameters cell; run a notebook headless with papermill
"""
