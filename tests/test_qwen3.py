"""Qwen3 and Qwen3-VL: registry entries, the thinking switch, the tiny Qwen3-VL through the vision experiment,
and the image-size bounds (max_pixels / min_pixels) of vision SFT."""

import copy
from pathlib import Path

import pytest
import torch
from openpyxl import Workbook
from PIL import Image

from data_loaders.excel_vision import load_excel_vision
from lab_utils.core.artifacts import read_json
from lab_utils.core.backend import Backend
from lab_utils.core.paths import output_dir
from lab_utils.models.chat import ChatTemplateError, has_thinking_switch, render, set_thinking, tokenize_conversation
from lab_utils.models.registry import REGISTRY, lora_target_modules, resolve_model
from lab_utils.vision.collator import VisionSFTCollator
from lab_utils.vision.lora import add_vision_lora
from lab_utils.vision.model import build_tiny_vision_model, load_vision_model
from lab_utils.vision.processor import check_pixel_bounds, merged_patch_side, set_image_pixels
from scripts import sft_alpaca, sft_vision

TEMPLATES = Path(__file__).parent / "data" / "templates"
HF_CPU = Backend("hf", "test", "cpu")
CHAT = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}]


@pytest.fixture(scope="module")
def smollm2():
    from lab_utils.models.registry import load_tokenizer

    return load_tokenizer(resolve_model("smollm2-135m"))


@pytest.fixture()
def qwen3_tokenizer(smollm2):
    """The embedded tokenizer wearing Qwen3's own chat template (tests/data/templates/qwen3.jinja)."""
    tokenizer = copy.deepcopy(smollm2)
    tokenizer.chat_template = (TEMPLATES / "qwen3.jinja").read_text(encoding="utf-8")
    return tokenizer


def test_registry_has_qwen3_and_qwen3_vl_with_hub_and_modelscope_ids():
    for size in ("0.6b", "1.7b", "4b", "8b"):
        spec = REGISTRY[f"qwen3-{size}"]
        assert spec.kind == "text" and spec.source == f"unsloth/Qwen3-{size.upper()}"
        assert spec.modelscope == f"Qwen/Qwen3-{size.upper()}"
    for size in ("2b", "4b", "8b"):
        spec = REGISTRY[f"qwen3-vl-{size}"]
        assert spec.kind == "vision" and spec.source == f"unsloth/Qwen3-VL-{size.upper()}-Instruct"
        assert spec.modelscope == f"Qwen/Qwen3-VL-{size.upper()}-Instruct"
    assert REGISTRY["tiny-qwen3-vl"].kind == "vision"
    targets = lora_target_modules(type("Config", (), {"model_type": "qwen3_vl"})())
    assert targets[:4] == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_thinking_switch_reaches_the_template_in_rendering_tokenizing_and_generation(qwen3_tokenizer):
    assert has_thinking_switch(qwen3_tokenizer)
    default = render(qwen3_tokenizer, CHAT[:1], add_generation_prompt=True)
    off = render(qwen3_tokenizer, CHAT[:1], add_generation_prompt=True, enable_thinking=False)
    assert default.endswith("<|im_start|>assistant\n")
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    set_thinking(qwen3_tokenizer, False)  # what load_lora_model does with Params.enable_thinking
    assert render(qwen3_tokenizer, CHAT[:1], add_generation_prompt=True) == off
    assert render(qwen3_tokenizer, CHAT[:1], add_generation_prompt=True, enable_thinking=True) == default
    encoded = tokenize_conversation(qwen3_tokenizer, CHAT, max_length=64)  # the prefix rule still holds
    labelled = qwen3_tokenizer.decode([t for t, label in zip(encoded["input_ids"], encoded["labels"]) if label != -100])
    assert labelled.endswith("5<|im_end|>\n") and "2 + 3" not in labelled  # the answer only


def test_enable_thinking_on_a_template_without_the_switch_is_one_line(smollm2, tmp_path):
    assert not has_thinking_switch(smollm2)
    with pytest.raises(ChatTemplateError, match="has no thinking switch"):
        render(smollm2, CHAT[:1], add_generation_prompt=True, enable_thinking=False)
    with pytest.raises(ChatTemplateError, match="has no thinking switch"):
        set_thinking(copy.deepcopy(smollm2), True)
    with pytest.raises(SystemExit) as stop:
        sft_alpaca.main(["--enable_thinking", "false", "--run_name", "thinking-refused", "--max_steps", "1"])
    message = str(stop.value)
    assert message.startswith("error: enable_thinking=False: the chat template of 'smollm2-135m' has no thinking")
    assert "\n" not in message and not (output_dir() / "sft_alpaca" / "thinking-refused").exists()


def test_pixel_bounds_below_one_patch_stop_before_a_run_folder():
    assert merged_patch_side("tiny-qwen2.5-vl") == 28 and merged_patch_side("qwen3-vl-2b") == 32
    assert merged_patch_side(resolve_model("tiny-qwen3-vl")) == 32  # read from the folder's config.json
    check_pixel_bounds("qwen3-vl-2b", 32 * 32, 32 * 32)
    with pytest.raises(ValueError, match=r"max_pixels=1000 is smaller than one image patch of qwen3-vl-2b \(32x32"):
        check_pixel_bounds("qwen3-vl-2b", 100, 1000)
    with pytest.raises(SystemExit) as stop:
        sft_vision.main(["--max_pixels", "500", "--run_name", "too-small"])
    assert "max_pixels=500 is smaller than one image patch of tiny-qwen2.5-vl (28x28 = 784 pixels)" in str(stop.value)
    assert not (output_dir() / "sft_vision" / "too-small").exists()
    with pytest.raises(ValueError, match="min_pixels=9000 is larger than max_pixels=8000"):
        check_pixel_bounds("tiny-qwen2.5-vl", 9000, 8000)


@pytest.mark.parametrize("name", ["tiny-qwen2.5-vl", "tiny-qwen3-vl"])
def test_a_4000x3000_photo_trains_within_the_pixel_bound(tmp_path, name):
    """The loader shrinks it (and says so); the processor bounds what reaches the model either way."""
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (4000, 3000), (200, 120, 40)).save(photo)
    workbook = Workbook()
    workbook.active.append(["image", "answer"])
    workbook.active.append([str(photo), "7"])
    workbook.save(tmp_path / "photos.xlsx")
    max_pixels = 256 * 256
    rows, report = load_excel_vision(str(tmp_path / "photos.xlsx"), max_image_side=5000, max_pixels=max_pixels)
    assert report.resized == 1 and "1 image(s) resized to fit" in report.summary()
    assert rows[0]["images"][0].width * rows[0]["images"][0].height <= max_pixels

    model, processor = build_tiny_vision_model(seed=0, name=name)
    set_image_pixels(processor, 56 * 56, max_pixels)
    side = merged_patch_side(name)
    full_size = [{"messages": rows[0]["messages"], "images": [Image.open(photo).convert("RGB")]}]  # not pre-shrunk
    batch = VisionSFTCollator(processor)(full_size)
    image_tokens = int(batch["image_grid_thw"].prod(-1).sum()) // 4
    assert 0 < image_tokens <= max_pixels // (side * side)  # 4000x3000 px would be ~11.7k (15k) tokens unbounded
    model = add_vision_lora(model, backend=HF_CPU, r=4)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)


@pytest.mark.learning
def test_the_vision_experiment_trains_the_tiny_qwen3_vl(tmp_path):
    p = sft_vision.Params(model="tiny-qwen3-vl", max_rows=8, heldout_rows=2, max_steps=3, batch_size=2, lora_r=4,
                          lora_alpha=4, max_new_tokens=4, save_steps=10, grid_images=2, run_name="tiny-qwen3-vl")
    result = sft_vision.run(p)
    metrics = read_json(Path(result["run_dir"]) / "metrics.json")
    assert metrics["global_step"] == 3 and metrics["train_loss"] > 0
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    model, _ = load_vision_model("tiny-qwen3-vl", backend=HF_CPU)
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
