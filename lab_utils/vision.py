"""Vision-language fine-tuning glue: the tiny CPU Qwen2.5-VL, its processor, collator, LoRA, scoring.

Two paths, one set of calls (see `lab_utils.backend`):

    CPU / hf        a real Qwen2.5-VL architecture at toy size, randomly initialised from a
                    seeded config (`tiny-qwen2.5-vl` in the model registry, built once into
                    $LAB_MODELS_DIR/tiny-qwen2.5-vl/ as safetensors), the SmolLM2 tokenizer plus
                    the Qwen vision special tokens and a Qwen2.5-VL-style chat template, an
                    image-only processor (`ImageTextProcessor`, PIL only: the stock Qwen processor
                    also builds a video processor that needs torchvision, which does not import
                    beside CPU torch), our `VisionSFTCollator`, and peft LoRA.
    GPU / unsloth   `FastVisionModel.from_pretrained` + `FastVisionModel.get_peft_model`,
                    `UnslothVisionDataCollator`, any Qwen2.5-VL id (4-bit optional).

Rows are the `data_loaders.excel_vision` schema: `messages` in the content-list form
({"type": "image"} placeholders) and an `images` column of PIL images.
Training either way uses `vision_sft_config(...)`, which carries the settings TRL needs to
leave a vision dataset to the collator.
"""

import json
import logging
import re
import unicodedata
from pathlib import Path

import torch

from lab_utils.backend import get_backend, import_unsloth
from lab_utils.models import save_model_folder
from lab_utils.paths import models_dir

log = logging.getLogger("lab")

TINY_VISION_NAME = "tiny-qwen2.5-vl"  # registry name and folder name under LAB_MODELS_DIR
PROCESSOR_MARKER = "lab_image_text_processor.json"  # says "load me with ImageTextProcessor"
VISION_SPECIAL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
IMAGE_TOKEN = "<|image_pad|>"
USER_MARKER = "<|im_start|>user\n"
ASSISTANT_MARKER = "<|im_start|>assistant\n"
IGNORE_INDEX = -100

# The Qwen2.5-VL chat template, reduced to what the lab uses: ChatML turns, string or
# content-list messages, and one <|vision_start|><|image_pad|><|vision_end|> per image
# (the processor widens <|image_pad|> to the image's number of merged patches).
QWEN_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A real Qwen2.5-VL at toy size: 2 text layers of width 64 (head_dim 16, so mrope_section
# must sum to 8), a 2-block vision tower of width 32. ~3.3M parameters, most of them the
# tied 49k-token embedding; a forward+backward on a few small images takes tens of ms.
TINY_TEXT_CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=4096,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
TINY_VISION_CONFIG = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                          patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                          fullatt_block_indexes=[1])
# 28-px merged patches: a 448x448 image (the loader's default limit) is 256 image tokens.
TINY_IMAGE_PIXELS = dict(min_pixels=56 * 56, max_pixels=448 * 448)


# ---------------------------------------------------------------- processor

def _processor_base():
    # A ProcessorMixin, so TRL's SFTTrainer accepts it as the processing_class of a
    # vision-language model (it refuses image datasets with a bare tokenizer).
    from transformers import ProcessorMixin

    return ProcessorMixin


class ImageTextProcessor(_processor_base()):
    """Chat template + tokenizer + Qwen2-VL PIL image processor; no video, no torchvision.

    `processor(text=[...], images=[...])` expands each <|image_pad|> to the image's number
    of merged patches (grid t*h*w / merge_size**2) and returns input_ids, attention_mask,
    mm_token_type_ids (1 on image tokens: transformers 5.x needs it to build the 3-D
    M-RoPE positions), pixel_values and image_grid_thw, like the stock Qwen2.5-VL processor.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template: str | None = None):
        # ProcessorMixin reads the sub-processor names from this signature and checks their classes.
        super().__init__(image_processor, tokenizer,
                         chat_template=chat_template or tokenizer.chat_template or QWEN_VL_CHAT_TEMPLATE)
        self.image_token = IMAGE_TOKEN
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {IMAGE_TOKEN} token; add VISION_SPECIAL_TOKENS first")

    def apply_chat_template(self, messages, tokenize: bool = False, add_generation_prompt: bool = False, **kwargs):
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=tokenize,
                                                  add_generation_prompt=add_generation_prompt, **kwargs)

    def __call__(self, text, images=None, padding=True, return_tensors="pt", padding_side=None, **kwargs):
        from transformers import BatchFeature

        texts = [text] if isinstance(text, str) else list(text)
        flat_images = flatten_images(images)
        vision = {}
        if flat_images:
            vision = dict(self.image_processor(images=flat_images, return_tensors="pt"))
            texts = self.expand_image_tokens(texts, vision["image_grid_thw"])
        elif any(IMAGE_TOKEN in t for t in texts):
            raise ValueError(f"the text holds {IMAGE_TOKEN} but no images were given")
        encoded = self.tokenizer(texts, padding=padding, return_tensors=return_tensors, padding_side=padding_side,
                                 add_special_tokens=False, **kwargs)
        encoded["mm_token_type_ids"] = (encoded["input_ids"] == self.image_token_id).long()
        return BatchFeature(data={**encoded, **vision})

    def expand_image_tokens(self, texts, grid_thw):
        counts = (grid_thw.prod(-1) // self.image_processor.merge_size**2).tolist()
        found = sum(t.count(IMAGE_TOKEN) for t in texts)
        if found != len(counts):
            raise ValueError(f"{found} {IMAGE_TOKEN} placeholder(s) in the text but {len(counts)} image(s)")
        counts_iter = iter(counts)
        return [re.sub(re.escape(IMAGE_TOKEN), lambda _: IMAGE_TOKEN * next(counts_iter), t) for t in texts]

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    def save_pretrained(self, folder) -> Path:
        folder = Path(folder)
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)
        (folder / PROCESSOR_MARKER).write_text(json.dumps({"chat_template": self.chat_template}, indent=2))
        return folder

    @classmethod
    def from_pretrained(cls, folder):
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        marker = Path(folder) / PROCESSOR_MARKER
        template = json.loads(marker.read_text())["chat_template"] if marker.exists() else None
        return cls(Qwen2VLImageProcessorPil.from_pretrained(folder), AutoTokenizer.from_pretrained(folder), template)


def flatten_images(images) -> list:
    """None, a flat list, or one list per sample -> one flat list of images, in text order."""
    flat = []
    for item in images or []:
        flat.extend(item if isinstance(item, (list, tuple)) else [item])
    return flat


def load_vision_processor(source: str):
    """Our image-only processor for lab-built folders or where torchvision is missing, else AutoProcessor."""
    from lab_utils.backend import has_package

    if (Path(source) / PROCESSOR_MARKER).exists() or not has_package("torchvision"):
        return ImageTextProcessor.from_pretrained(source)
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(source)


# ---------------------------------------------------------------- the tiny CPU model

def tiny_vision_tokenizer():
    """The embedded SmolLM2 tokenizer, plus the Qwen vision tokens and chat template."""
    from lab_utils.models import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model("smollm2-135m"))
    tokenizer.add_special_tokens({"additional_special_tokens": VISION_SPECIAL_TOKENS})
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE
    return tokenizer


def tiny_vision_config(tokenizer):
    from transformers import Qwen2_5_VLConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in VISION_SPECIAL_TOKENS}
    text = dict(TINY_TEXT_CONFIG, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return Qwen2_5_VLConfig(text_config=text, vision_config=dict(TINY_VISION_CONFIG),
                            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                            tie_word_embeddings=True)


def build_tiny_vision_model(seed: int = 0):
    """A seeded, randomly initialised toy Qwen2.5-VL and its processor (nothing downloaded)."""
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = tiny_vision_tokenizer()
    config = tiny_vision_config(tokenizer)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_processor = Qwen2VLImageProcessorPil(**TINY_IMAGE_PIXELS)
    return model, ImageTextProcessor(image_processor, tokenizer, QWEN_VL_CHAT_TEMPLATE)


def tiny_vision_dir() -> Path:
    return models_dir() / TINY_VISION_NAME


def ensure_tiny_vision_model(seed: int = 0) -> Path:
    """Build the toy model once into $LAB_MODELS_DIR/tiny-qwen2.5-vl/ (safetensors); return the folder."""
    target = tiny_vision_dir()
    if all((target / name).exists() for name in ("model.safetensors", "tokenizer_config.json", PROCESSOR_MARKER)):
        return target
    log.warning("building the tiny random Qwen2.5-VL into %s (once)", target)
    print(f"[lab] building the tiny random Qwen2.5-VL into {target} (once, seconds)", flush=True)
    model, processor = build_tiny_vision_model(seed)
    return save_model_folder(model, processor, target)


# ---------------------------------------------------------------- loading

def load_vision_model(name: str = TINY_VISION_NAME, backend=None, load_in_4bit: bool = False,
                      max_seq_length: int = 2048, gradient_checkpointing: bool = True):
    """(model, processor) for a registry name, folder or hub id, on the chosen backend."""
    from lab_utils.models import resolve_model

    backend = backend or get_backend()
    source = resolve_model(name)
    if backend.is_unsloth:
        return load_vision_model_unsloth(source, load_in_4bit, max_seq_length, gradient_checkpointing)
    return load_vision_model_hf(source, backend.device, load_in_4bit)


def load_vision_model_hf(source: str, device: str = "cpu", load_in_4bit: bool = False):
    from transformers import AutoModelForImageTextToText

    kwargs = {"dtype": torch.bfloat16 if device == "cuda" else torch.float32}
    if load_in_4bit:
        if device != "cuda":
            raise RuntimeError("load_in_4bit needs a CUDA GPU (bitsandbytes); on CPU set load_in_4bit=False")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16,
                                                           bnb_4bit_quant_type="nf4")
        kwargs["device_map"] = {"": 0}
    model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    if not load_in_4bit:
        model = model.to(device)
    return model, load_vision_processor(source)


def load_vision_model_unsloth(source: str, load_in_4bit: bool = False, max_seq_length: int = 2048,
                              gradient_checkpointing: bool = True):
    """Unsloth's FastVisionModel (GPU only; import_unsloth says so clearly on CPU)."""
    import_unsloth()
    from unsloth import FastVisionModel

    model, processor = FastVisionModel.from_pretrained(
        source,
        load_in_4bit=load_in_4bit,
        max_seq_length=max_seq_length,
        use_gradient_checkpointing="unsloth" if gradient_checkpointing else False,
    )
    return model, processor


# ---------------------------------------------------------------- LoRA

def vision_lora_target_regex(finetune_vision_layers: bool = True, finetune_language_layers: bool = True,
                             finetune_attention_modules: bool = True, finetune_mlp_modules: bool = True) -> str:
    """A peft target_modules regex (full match on module names) mirroring Unsloth's four switches.

    Language model: q/k/v/o_proj and gate/up/down_proj under `language_model`.
    Vision tower: attn.qkv/attn.proj and the block MLPs under `visual.blocks` (Qwen2.5-VL
    gate/up/down_proj, Qwen2-VL fc1/fc2); the patch merger stays frozen, as in Unsloth.
    """
    if not (finetune_vision_layers or finetune_language_layers):
        raise ValueError("finetune_vision_layers and finetune_language_layers are both False: nothing to train")
    if not (finetune_attention_modules or finetune_mlp_modules):
        raise ValueError("finetune_attention_modules and finetune_mlp_modules are both False: nothing to train")
    parts = []
    if finetune_language_layers:
        names = (["q_proj", "k_proj", "v_proj", "o_proj"] if finetune_attention_modules else []) + \
                (["gate_proj", "up_proj", "down_proj"] if finetune_mlp_modules else [])
        parts.append(rf".*language_model\.layers\.\d+\.(self_attn|mlp)\.({'|'.join(names)})")
    if finetune_vision_layers:
        names = (["attn.qkv", "attn.proj"] if finetune_attention_modules else []) + \
                (["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "mlp.fc1", "mlp.fc2"] if finetune_mlp_modules else [])
        parts.append(rf".*visual\.blocks\.\d+\.({'|'.join(n.replace('.', r'.') for n in names)})")
    return "|".join(f"(?:{p})" for p in parts)


def add_vision_lora(model, backend=None, r: int = 16, lora_alpha: int = 16, lora_dropout: float = 0.0,
                    use_rslora: bool = False, use_dora: bool = False,
                    finetune_vision_layers: bool = True, finetune_language_layers: bool = True,
                    finetune_attention_modules: bool = True, finetune_mlp_modules: bool = True, seed: int = 3407):
    """Wrap the model with LoRA adapters; the switches mean what they mean in Unsloth."""
    backend = backend or get_backend()
    switches = dict(finetune_vision_layers=finetune_vision_layers, finetune_language_layers=finetune_language_layers,
                    finetune_attention_modules=finetune_attention_modules, finetune_mlp_modules=finetune_mlp_modules)
    if backend.is_unsloth:
        import_unsloth()
        from unsloth import FastVisionModel

        return FastVisionModel.get_peft_model(model, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                              bias="none", random_state=seed, use_rslora=use_rslora,
                                              use_dora=use_dora, loftq_config=None, **switches)
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)  # LoRA A matrices are random: same seed, same adapters
    config = LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, bias="none", use_rslora=use_rslora,
                        use_dora=use_dora, target_modules=vision_lora_target_regex(**switches), task_type="CAUSAL_LM")
    return get_peft_model(model, config)


# ---------------------------------------------------------------- collators

def assistant_token_mask(input_ids: list[int], start_ids: list[int], end_id: int) -> list[bool]:
    """True on every assistant answer token and its closing <|im_end|> (so the model learns to stop)."""
    mask, i, n, k = [False] * len(input_ids), 0, len(input_ids), len(start_ids)
    while i < n:
        if input_ids[i:i + k] == start_ids:
            j = i + k
            while j < n and input_ids[j] != end_id:
                mask[j] = True
                j += 1
            if j < n:
                mask[j] = True
            i = j + 1
        else:
            i += 1
    return mask


def example_images(example) -> list:
    """An example's images: the `images` column, else images inline in the message contents."""
    if example.get("images"):
        return list(example["images"])
    return [part["image"] for message in example["messages"] if not isinstance(message["content"], str)
            for part in message["content"] if part.get("image") is not None]


class VisionSFTCollator:
    """Rows {messages, images} -> a training batch whose labels are the assistant answers only.

    Everything else is -100: system and user turns, the image placeholder tokens and
    <|vision_start|>/<|vision_end|>, padding. A batch in which every label is masked (an
    answer truncated away, a conversation without an assistant turn) is an error, not a
    silent zero-gradient step.
    """

    def __init__(self, processor, max_length: int | None = None, dtype: torch.dtype | None = None):
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.max_length = max_length
        self.dtype = dtype  # pixel_values dtype (bf16 models on GPU); None keeps float32
        self.start_ids = self.tokenizer.encode(ASSISTANT_MARKER, add_special_tokens=False)
        self.end_id = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.never_label = torch.tensor([self.tokenizer.convert_tokens_to_ids(t) for t in VISION_SPECIAL_TOKENS])

    def __call__(self, examples: list[dict]) -> dict:
        texts = [self.processor.apply_chat_template(e["messages"], tokenize=False) for e in examples]
        images = [example_images(e) for e in examples]
        batch = self.processor(text=texts, images=images if any(images) else None, padding=True,
                               return_tensors="pt", padding_side="right")
        self.check_length(batch, examples)
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        for row, ids in enumerate(batch["input_ids"].tolist()):
            keep = torch.tensor(assistant_token_mask(ids, self.start_ids, self.end_id))
            labels[row, keep] = batch["input_ids"][row, keep]
        labels[torch.isin(batch["input_ids"], self.never_label) | (batch["attention_mask"] == 0)] = IGNORE_INDEX
        if (labels == IGNORE_INDEX).all():
            sources = [e.get("source", "?") for e in examples]
            raise ValueError(f"every label in this batch is masked (rows {sources}): no assistant answer tokens; "
                             f"check the rows end with an assistant turn and the chat template writes '{ASSISTANT_MARKER.strip()}'")
        batch["labels"] = labels
        if self.dtype is not None and "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        return dict(batch)

    def check_length(self, batch, examples):
        # Truncating would cut image tokens away from their pixel_values (a shape error deep in
        # the model) or the answer (nothing to learn), so an over-long row is a clear error.
        if self.max_length is None or batch["input_ids"].shape[1] <= self.max_length:
            return
        lengths = batch["attention_mask"].sum(-1).tolist()
        too_long = [(e.get("source", "?"), n) for e, n in zip(examples, lengths) if n > self.max_length]
        raise ValueError(f"rows longer than max_length={self.max_length} tokens: {too_long}; "
                         "lower the loader's max_image_side or raise max_length")


def unsloth_vision_collator(model, processor, max_seq_length: int | None = None):
    """Unsloth's collator, trained on the assistant answers only (GPU path)."""
    import_unsloth()
    from unsloth.trainer import UnslothVisionDataCollator

    return UnslothVisionDataCollator(model, processor, max_seq_length=max_seq_length, train_on_responses_only=True,
                                     instruction_part=USER_MARKER, response_part=ASSISTANT_MARKER)


def make_vision_collator(model, processor, backend=None, max_length: int | None = None):
    backend = backend or get_backend()
    if backend.is_unsloth:
        return unsloth_vision_collator(model, processor, max_length)
    dtype = next(model.parameters()).dtype
    return VisionSFTCollator(processor, max_length=max_length, dtype=None if dtype == torch.float32 else dtype)


def vision_sft_config() -> dict:
    """The SFTConfig fields vision rows need (lab_utils.training.training_arguments adds the shared ones):
    the collator, not TRL, turns rows into tensors."""
    return dict(
        remove_unused_columns=False,  # the collator needs `images`, which the model's forward does not name
        dataset_text_field="",
        dataset_kwargs={"skip_prepare_dataset": True},  # no text-only tokenisation pass over image rows
    )


# ---------------------------------------------------------------- inference and scoring

def question_messages(question: str, n_images: int = 1, system: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    return messages + [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": question}]}]


@torch.no_grad()
def generate_answers(model, processor, images: list, questions: list[str], max_new_tokens: int = 16,
                     system: str | None = None) -> list[str]:
    """Greedy answers, one per (images, question); `images[i]` is a PIL image or a list of them.

    On the Unsloth path call `FastVisionModel.for_inference(model)` first.
    """
    per_row = [item if isinstance(item, (list, tuple)) else [item] for item in images]
    texts = [processor.apply_chat_template(question_messages(q, len(imgs), system), tokenize=False,
                                           add_generation_prompt=True) for q, imgs in zip(questions, per_row)]
    tokenizer = getattr(processor, "tokenizer", processor)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # generation continues from the right edge
    try:
        batch = processor(text=texts, images=per_row, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    was_training = model.training
    model.eval()
    output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model.train(was_training)
    new_tokens = output[:, batch["input_ids"].shape[1]:]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)]


def normalise_answer(text) -> str:
    """Compare what a reader would: full-width digits as ASCII, case and spacing ignored."""
    text = unicodedata.normalize("NFKC", str(text or ""))
    return re.sub(r"\s+", " ", text).strip().casefold()


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def char_accuracy(prediction: str, reference: str) -> float:
    """1 - character error rate against the reference, floored at 0 (1.0 = every character right)."""
    prediction, reference = normalise_answer(prediction), normalise_answer(reference)
    if not reference:
        return float(not prediction)
    return max(0.0, 1.0 - edit_distance(prediction, reference) / len(reference))


def score_answers(predictions: list[str], references: list[str]) -> dict:
    """Exact match and mean character accuracy over paired answers."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        return {"exact_match": 0.0, "char_accuracy": 0.0, "n": 0}
    exact = [normalise_answer(p) == normalise_answer(r) for p, r in zip(predictions, references)]
    chars = [char_accuracy(p, r) for p, r in zip(predictions, references)]
    return {"exact_match": sum(exact) / len(exact), "char_accuracy": sum(chars) / len(chars), "n": len(references)}
