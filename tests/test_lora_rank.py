"""LoRA rank lesson: parameter counts by hand, rank(dW) <= r on a real adapter, merging keeps outputs, the notebook."""

import json

import numpy as np
import pytest

from lab_utils.export import adapters
from lab_utils.teaching import lowrank
from lab_utils.core.notebooks import NOTEBOOKS_DIR, execute
from lab_utils.core.paths import LabPathError
from scripts import teach_lora_rank
from tests.helpers import TINY_LM

TINY_R, TINY_ALPHA = 4, 8


# ---------------------------------------------------------------- pure math


def test_parameter_counts_by_hand():
    # q_proj of SmolLM2-135M is 576 x 576: B is 576 x 8, A is 8 x 576
    assert lowrank.lora_parameter_count(576, 576, 8) == 8 * (576 + 576) == 9216
    row = lowrank.lora_parameter_counts((576, 576), [8])[0]
    assert row == {"rank": 8, "full": 576 * 576, "lora": 9216, "fraction": 9216 / 331776}
    assert lowrank.lora_parameter_count(1536, 576, 1) == 2112  # gate_proj: d_out 1536, d_in 576
    assert lowrank.lora_break_even_rank((576, 576)) == 287  # 288 * 1152 == 576 * 576: equal, no longer smaller


def test_lora_scale_plain_and_rslora():
    assert lowrank.lora_scale(16, 8) == 2.0
    assert lowrank.lora_scale(16, 64, use_rslora=True) == 2.0


def test_singular_values_without_the_dense_matrix():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 60)), rng.normal(size=(40, 5))
    dense = lowrank.delta_weight(a, b, 0.5)
    assert np.allclose(dense, 0.5 * b @ a)
    full = np.linalg.svd(dense, compute_uv=False)
    assert np.allclose(lowrank.lora_singular_values(a, b, 0.5), full[:5], rtol=1e-10)
    assert np.linalg.matrix_rank(dense) == lowrank.numerical_rank(full) == 5
    assert full[5] < 1e-12 * full[0]


def test_effective_rank_by_energy():
    s = np.array([3.0, 2.0, 1.0, 0.0])
    assert lowrank.effective_rank(s, 0.9) == 2  # 9 + 4 of 14 is 93%
    assert lowrank.effective_rank(s, 0.99) == 3
    assert lowrank.numerical_rank(s) == 3
    assert lowrank.effective_rank(np.zeros(4)) == lowrank.numerical_rank(np.zeros(4)) == 0  # B = 0 at step 0


# ---------------------------------------------------------------- the embedded model's shapes (config only)


def test_layer_shapes_of_the_embedded_model():
    shapes = teach_lora_rank.layer_shapes("smollm2-135m").set_index("module")
    assert tuple(shapes.loc["q_proj", ["d_out", "d_in", "count"]]) == (576, 576, 30)
    assert tuple(shapes.loc["k_proj", ["d_out", "d_in"]]) == (192, 576)  # 3 KV heads of 64
    assert tuple(shapes.loc["down_proj", ["d_out", "d_in"]]) == (576, 1536)
    table = teach_lora_rank.parameter_table(shapes.reset_index(), [8]).set_index("module")
    assert table.loc["q_proj", "r=8"] == 9216 and table.loc["q_proj", "full"] == 331776
    assert table.loc["all adapted (x layers)", "layers"] == 210


def test_missing_adapter_is_a_clear_error():
    assert adapters.find_adapter("") is None  # an empty LAB_OUTPUT_DIR: the lesson will train one
    with pytest.raises(LabPathError, match="no LoRA adapter at 'nope'"):
        adapters.find_adapter("nope")


# ---------------------------------------------------------------- a real trained adapter


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory):
    """A 2-step sft_alpaca run (r=4, alpha=8) of the tiny random Llama (2 layers x 7 projections) in its own output
    folder, made by the lesson's own demo step."""
    root = tmp_path_factory.mktemp("lora_rank_outputs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAB_OUTPUT_DIR", str(root))
        p = teach_lora_rank.Params(model=TINY_LM, demo_steps=2, demo_lora_r=TINY_R, demo_lora_alpha=TINY_ALPHA)
        folder = teach_lora_rank.train_demo_adapter(p)
    return root, folder


def test_real_adapter_rank_at_most_r(tiny_adapter):
    _, folder = tiny_adapter
    adapter = adapters.read_lora_adapter(folder)
    assert adapter.rank == TINY_R and adapter.scale == TINY_ALPHA / TINY_R and len(adapter.modules) == 2 * 7
    table, spectra = teach_lora_rank.adapter_ranks(adapter, 0.9)
    assert (table["rank"] <= TINY_R).all() and (table["effective_rank"] <= table["rank"]).all()
    assert table["rank"].max() >= 1  # training moved B off zero
    a, b = adapter.modules["model.layers.0.self_attn.q_proj"]
    dense = lowrank.delta_weight(a, b, adapter.scale)
    assert dense.shape == (64, 64) and np.linalg.matrix_rank(dense) <= TINY_R  # the tiny Llama: 2 heads of 32
    dense_s = np.linalg.svd(dense, compute_uv=False)
    assert np.allclose(dense_s[:TINY_R], spectra["model.layers.0.self_attn.q_proj"], rtol=1e-8, atol=1e-15)


def test_newest_finished_run_is_found(tiny_adapter, monkeypatch):
    root, folder = tiny_adapter
    monkeypatch.setenv("LAB_OUTPUT_DIR", str(root))
    assert adapters.find_adapter("") == folder
    assert adapters.find_adapter(folder.parent.name) == folder
    assert adapters.find_adapter(str(folder.parent)) == folder


def test_merged_model_gives_the_unmerged_outputs(tiny_adapter):
    _, folder = tiny_adapter
    adapter = adapters.read_lora_adapter(folder)
    merge = teach_lora_rank.merge_check(teach_lora_rank.Params(), adapter, "model.layers.0.self_attn.q_proj")
    assert merge["max_abs_diff_merged_vs_unmerged"] < 1e-3  # float32 round-off on logits of size ~20
    assert merge["max_abs_change_adapter_vs_base"] > merge["max_abs_diff_merged_vs_unmerged"]
    assert merge["max_abs_diff_manual_vs_merged_weight"] < 1e-6  # W + scale * B @ A is the merged weight
    assert merge["parameters_merged"] < merge["parameters_unmerged"]  # the adapter's numbers are gone


@pytest.mark.notebook
def test_notebook_executes_headless_given_an_adapter(tiny_adapter, tmp_path, monkeypatch):
    _, folder = tiny_adapter
    monkeypatch.setenv("LAB_OUTPUT_DIR", str(tmp_path / "out"))
    executed = execute(NOTEBOOKS_DIR / "teach_lora_rank.ipynb", tmp_path / "teach_lora_rank.ipynb",
                       {"run_name": "nb", "adapter_run": str(folder.parent)})
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    metrics = json.loads((tmp_path / "out" / "teach_lora_rank" / "nb" / "metrics.json").read_text())
    assert metrics["r"] == TINY_R and metrics["max_rank_seen"] <= TINY_R
    assert metrics["dense_check"]["matrix_rank"] <= TINY_R


def test_script_run_writes_every_figure_and_table(tiny_adapter, tmp_path, monkeypatch):
    _, folder = tiny_adapter
    monkeypatch.setenv("LAB_OUTPUT_DIR", str(tmp_path))
    result = teach_lora_rank.main(["--adapter_run", str(folder.parent), "--run_name", "cli"])
    run = tmp_path / "teach_lora_rank" / "cli"
    assert result["run_dir"] == str(run) and (run / "run_complete.json").exists()
    for name in ("parameter_counts.png", "adapter_spectra.png", "effective_rank.png", "dense_spectrum.png",
                 "parameter_counts.csv", "adapter_ranks.csv"):
        assert (run / name).stat().st_size > 0, name
    assert json.loads((run / "metrics.json").read_text())["r"] == TINY_R
