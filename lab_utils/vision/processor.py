"""The Qwen2.5-VL chat format and an image-only processor that needs no torchvision.

The stock Qwen2.5-VL processor also builds a video processor, which needs torchvision, and
PyPI torchvision does not import beside CPU torch. `ImageTextProcessor` is the image half of
it: chat template + tokenizer + the Qwen2-VL PIL image processor. `load_vision_processor`
picks it for lab-built model folders and wherever torchvision is missing, else AutoProcessor.
"""

import json
import re
from pathlib import Path

from lab_utils.core.errors import ParamError

VISION_SPECIAL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
IMAGE_TOKEN = "<|image_pad|>"
USER_MARKER = "<|im_start|>user\n"
ASSISTANT_MARKER = "<|im_start|>assistant\n"
PROCESSOR_MARKER = "lab_image_text_processor.json"  # in a model folder: "load me with ImageTextProcessor"

# The Qwen2.5-VL chat template, reduced to what the lab uses: ChatML turns, string or
# content-list messages, and one <|vision_start|><|image_pad|><|vision_end|> per image
# (the processor widens <|image_pad|> to the image's number of merged patches).
QWEN_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


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


def load_vision_processor(source: str, trust_remote_code: bool = False):
    """Our image-only processor for lab-built folders or where torchvision is missing, else AutoProcessor."""
    from lab_utils.core.backend import has_package

    if (Path(source) / PROCESSOR_MARKER).exists() or not has_package("torchvision"):
        return ImageTextProcessor.from_pretrained(source)
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)


# ---------------------------------------------------------------- image size bounds (max_pixels / min_pixels)

def merged_patch_side(model: str) -> int:
    """Pixels per side of one image token (patch_size * spatial_merge_size): 28 for Qwen2/2.5-VL, 32 for Qwen3-VL.

    Read from a local folder's config.json when there is one, else from the name, so the check
    can run before any model is loaded (and before a run folder exists).
    """
    config = Path(model).expanduser() / "config.json"
    if config.is_file():
        vision = json.loads(config.read_text(encoding="utf-8")).get("vision_config", {})
        if vision.get("patch_size") and vision.get("spatial_merge_size"):
            return int(vision["patch_size"]) * int(vision["spatial_merge_size"])
    return 32 if "qwen3" in model.lower() else 28


def check_pixel_bounds(model: str, min_pixels: int, max_pixels: int) -> None:
    """One clear ParamError (a ValueError) for bounds no image can meet.

    That is max_pixels below one image token, or min above max."""
    side = merged_patch_side(model)
    if max_pixels < side * side:
        raise ParamError(f"max_pixels={max_pixels} is smaller than one image patch of {model} ({side}x{side} = "
                         f"{side * side} pixels); use at least {side * side}, e.g. 768*768 = 589824")
    if min_pixels > max_pixels:
        raise ParamError(f"min_pixels={min_pixels} is larger than max_pixels={max_pixels}")


def set_image_pixels(processor, min_pixels: int, max_pixels: int):
    """Bound every image's resized area to [min_pixels, max_pixels] (the Qwen2-VL image processors'
    `size`, which the PIL and the torchvision variants both read); returns the processor."""
    image_processor = getattr(processor, "image_processor", processor)
    image_processor.size = {"shortest_edge": int(min_pixels), "longest_edge": int(max_pixels)}
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if hasattr(image_processor, name):  # older releases keep them as attributes too
            setattr(image_processor, name, int(value))
    return processor
