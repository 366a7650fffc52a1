"""LoRA variants are really applied: rsLoRA scaling, DoRA magnitudes, LoRA+ learning rates."""

import pytest
import torch

from lab_utils.core.backend import choose_backend
from lab_utils.training.lora import build_lora_model
from lab_utils.training.trainer import make_trainer
from lab_utils.training.lora import resolve_precision
from scripts import sft_alpaca



def lora_model(**options):
    p = sft_alpaca.Params(lora_r=4, lora_alpha=8, lora_mlp=False, **options)
    return build_lora_model(p, choose_backend("hf"))


def test_rslora_scales_by_alpha_over_sqrt_r():
    model, _ = lora_model(use_rslora=True)
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q.scaling["default"] == pytest.approx(8 / 4 ** 0.5)
    plain, _ = lora_model()
    assert plain.base_model.model.model.layers[0].self_attn.q_proj.scaling["default"] == pytest.approx(8 / 4)


def test_dora_adds_magnitude_vectors():
    model, _ = lora_model(use_dora=True)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_magnitude_vector" in n for n in names)


def test_loraplus_gives_b_a_higher_learning_rate(tmp_path):
    p = sft_alpaca.Params(lora_r=4, lora_alpha=8, lora_mlp=False, loraplus_lr_ratio=16.0, learning_rate=1e-4,
                          report_to="none")
    backend = choose_backend("hf")
    model, tokenizer = build_lora_model(p, backend)
    trainer, _ = make_trainer(p, model, tokenizer, None, None, tmp_path, backend)
    lrs = sorted({group["lr"] for group in trainer.optimizer.param_groups if group["params"]})
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(16e-4)


def test_only_adapter_weights_train():
    model, _ = lora_model()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_precision_auto_is_explicit_about_the_hardware():
    cpu_choice = resolve_precision("auto", "cpu")
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert cpu_choice == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="expected auto"):
        resolve_precision("int3", "cpu")
