"""The tiny Qwen2.5-VL, its processor, the answer-only collator, LoRA switches, training, scoring."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data_loaders.excel_vision import load_excel_vision
from data_loaders.vision_samples import PATH_SHEET, SAMPLE_DIR
from lab_utils.core.backend import Backend
from lab_utils.models.registry import REGISTRY, resolve_model
from lab_utils.vision.answers import char_accuracy, generate_answers, score_answers
from lab_utils.vision.collator import IGNORE_INDEX, VisionSFTCollator, make_vision_collator, vision_sft_config
from lab_utils.vision.lora import add_vision_lora, vision_lora_target_regex
from lab_utils.vision.model import (TINY_RECIPE_FILE, build_tiny_vision_model, ensure_tiny_vision_model,
                                    load_vision_model, load_vision_model_unsloth, tiny_recipe)

HF_CPU = Backend("hf", "test", "cpu")


@pytest.fixture(scope="module")
def rows():
    dataset, _ = load_excel_vision(str(SAMPLE_DIR / PATH_SHEET), limit=4)
    return [dataset[i] for i in range(len(dataset))]


@pytest.fixture(scope="module")
def tiny():
    return load_vision_model("tiny-qwen2.5-vl", backend=HF_CPU)


def trainable_names(model):
    return [name for name, p in model.named_parameters() if p.requires_grad]


def test_tiny_model_is_registered_seeded_and_round_trips_through_safetensors(tmp_path, monkeypatch, rows):
    assert REGISTRY["tiny-qwen2.5-vl"].kind == "vision"
    assert resolve_model("tiny-qwen2.5-vl").endswith("tiny-qwen2.5-vl")
    first, processor = build_tiny_vision_model(seed=0)
    second, _ = build_tiny_vision_model(seed=0)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    config = first.config.text_config
    assert sum(config.rope_parameters["mrope_section"]) == config.hidden_size // config.num_attention_heads // 2
    monkeypatch.setattr("lab_utils.vision.model.tiny_vision_dir", lambda: tmp_path / "tiny")
    folder = ensure_tiny_vision_model()
    assert (folder / "model.safetensors").exists() and not (folder.parent / "tiny.partial").exists()
    built_at = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_vision_model() == folder and (folder / "model.safetensors").stat().st_mtime_ns == built_at
    (folder / TINY_RECIPE_FILE).write_text(json.dumps({"seed": 0, "init_std": 0.02}))  # built by an older lab
    ensure_tiny_vision_model()
    assert json.loads((folder / TINY_RECIPE_FILE).read_text()) == tiny_recipe(0)
    loaded, loaded_processor = load_vision_model(str(folder), backend=HF_CPU)
    batch = VisionSFTCollator(loaded_processor)(rows[:2])
    first.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.allclose(first(**batch).logits, loaded(**batch).logits, atol=1e-5)


def test_two_processes_building_the_tiny_model_at_once_both_get_one_good_folder(tmp_path):
    # DDP ranks and parallel papermill runs start together on a fresh machine: the second
    # must wait for the first build, not write into the same staging folder
    build = "from lab_utils.vision.model import ensure_tiny_vision_model; print(ensure_tiny_vision_model())"
    env = {**os.environ, "LAB_MODELS_DIR": str(tmp_path), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", build], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    folder = tmp_path / "tiny-qwen2.5-vl"
    assert {out.strip().splitlines()[-1] for out, _ in outputs} == {str(folder)}
    # each shared folder built once, then found (the tiny model takes its tokenizer from the embedded one)
    assert sum("building the tiny random" in err for _, err in outputs) == 1
    assert sum("converting embedded SmolLM2" in out for out, _ in outputs) == 1
    assert json.loads((folder / TINY_RECIPE_FILE).read_text()) == tiny_recipe(0)
    assert not (tmp_path / "tiny-qwen2.5-vl.partial").exists()


def test_processor_expands_image_tokens_by_grid_and_marks_them(tiny, rows):
    _, processor = tiny
    text = processor.apply_chat_template(rows[0]["messages"])
    assert text.count("<|image_pad|>") == 1 and text.startswith("<|im_start|>system\n")
    batch = processor(text=[text], images=[rows[0]["images"]])
    grid = batch["image_grid_thw"][0]
    n_image_tokens = int((batch["input_ids"] == processor.image_token_id).sum())
    assert n_image_tokens == int(grid.prod()) // 4 == batch["pixel_values"].shape[0] // 4
    assert torch.equal(batch["mm_token_type_ids"].bool(), batch["input_ids"] == processor.image_token_id)
    with pytest.raises(ValueError, match="1 <\\|image_pad\\|> placeholder\\(s\\) in the text but 2 image"):
        processor(text=[text], images=[rows[0]["images"] * 2])


def test_collator_labels_only_the_answer_and_its_end_token(tiny, rows):
    _, processor = tiny
    batch = VisionSFTCollator(processor)(rows[:3])
    tokenizer = processor.tokenizer
    for row, example in enumerate(rows[:3]):
        labelled = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        assert tokenizer.decode(labelled) == example["answer"] + "<|im_end|>"
    image_positions = batch["input_ids"] == processor.image_token_id
    assert image_positions.any() and (batch["labels"][image_positions] == IGNORE_INDEX).all()
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert set(batch) >= {"input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw",
                          "labels"}


def test_collator_refuses_a_batch_with_nothing_to_learn_or_too_long(tiny, rows):
    _, processor = tiny
    question_only = [{"messages": rows[0]["messages"][:1], "images": rows[0]["images"],
                      "source": "s.xlsx:Sheet1:row 2"}]
    with pytest.raises(ValueError, match=r"every label in this batch is masked \(rows \['s.xlsx:Sheet1:row 2'\]\)"):
        VisionSFTCollator(processor)(question_only)
    with pytest.raises(ValueError, match="rows longer than max_length=10 tokens"):
        VisionSFTCollator(processor, max_length=10)(rows[:1])


def test_lora_switches_choose_vision_or_language_modules():
    model, _ = build_tiny_vision_model(seed=0)
    language_only = add_vision_lora(model, backend=HF_CPU, r=4, finetune_vision_layers=False)
    names = trainable_names(language_only)
    assert names and all("language_model" in n and "lora_" in n for n in names)
    model, _ = build_tiny_vision_model(seed=0)
    vision_attention = add_vision_lora(model, backend=HF_CPU, r=4, finetune_language_layers=False,
                                       finetune_mlp_modules=False)
    names = trainable_names(vision_attention)
    assert names and all("visual.blocks" in n and (".attn.qkv." in n or ".attn.proj." in n) for n in names)
    with pytest.raises(ValueError, match="nothing to train"):
        vision_lora_target_regex(finetune_vision_layers=False, finetune_language_layers=False)
    model, _ = build_tiny_vision_model(seed=0)
    with_head = add_vision_lora(model, backend=HF_CPU, r=4, finetune_vision_layers=False, modules_to_save=["lm_head"])
    fully_trained = [n for n in trainable_names(with_head) if "lora_" not in n]
    assert fully_trained and all("lm_head" in n for n in fully_trained)
    assert not with_head.get_input_embeddings().weight.requires_grad  # untied: the input embedding stays frozen


@pytest.mark.learning
def test_lora_steps_lower_the_loss_on_a_repeated_batch_and_generate_answers(rows):
    model, processor = build_tiny_vision_model(seed=0)
    model = add_vision_lora(model, backend=HF_CPU, r=8, lora_alpha=16)
    batch = VisionSFTCollator(processor)(rows)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    model.train()
    losses = []
    for _ in range(6):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.2, losses
    answers = generate_answers(model, processor, [r["images"][0] for r in rows[:2]], ["Read it."] * 2, max_new_tokens=4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert model.training  # generation restores the mode it found




def test_scores_exact_match_and_character_accuracy():
    assert char_accuracy("05306", "05306") == 1.0
    assert char_accuracy("05316", "05306") == pytest.approx(0.8)
    assert char_accuracy("０５３０６ ", "05306") == 1.0  # full-width digits, stray space
    assert char_accuracy("123456789", "1") == 0.0  # floored, never negative
    scores = score_answers(["05306", "9", "abc"], ["05306", "98", "ABC"])
    assert scores == {"exact_match": pytest.approx(2 / 3), "char_accuracy": pytest.approx((1 + 0.5 + 1) / 3), "n": 3}
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        score_answers(["a", "b"], ["a"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU message")
def test_unsloth_path_says_clearly_it_needs_a_gpu():
    with pytest.raises(RuntimeError, match="unsloth needs a CUDA GPU"):
        load_vision_model_unsloth("unsloth/Qwen2.5-VL-3B-Instruct")


@pytest.mark.gpu
def test_unsloth_vision_sft_on_qwen25_vl(tmp_path, rows):
    """Real Qwen2.5-VL-3B through Unsloth: 4-bit load, LoRA on both towers, 2 SFT steps, an answer."""
    from lab_utils.core.backend import get_backend, import_unsloth

    backend = get_backend("unsloth")
    import_unsloth()  # before trl: unsloth patches the trainer classes when it is imported
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    from unsloth import FastVisionModel

    model, processor = load_vision_model("qwen2.5-vl-3b", backend=backend, load_in_4bit=True)
    model = add_vision_lora(model, backend=backend, r=8, lora_alpha=8)
    FastVisionModel.for_training(model)
    args = SFTConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, logging_steps=1,
                     save_strategy="no", learning_rate=2e-4, optim="adamw_8bit", bf16=True, report_to=[],
                     **vision_sft_config())
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=processor,
                         data_collator=make_vision_collator(model, processor, backend))
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    FastVisionModel.for_inference(model)
    answers = generate_answers(model, processor, [rows[0]["images"][0]], ["What is the reading?"], max_new_tokens=8)
    assert len(answers) == 1 and answers[0]
