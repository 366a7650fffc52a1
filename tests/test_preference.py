"""Preference tuning on the embedded model: the scoring, a short DPO run that learns, ORPO, init_from, papermill."""

import json
import shutil

import pytest
import torch
import yaml

from data_loaders.preference import load_preference_file, unpair
from lab_utils.core.artifacts import read_json
from lab_utils.core.notebooks import NOTEBOOKS_DIR, execute
from lab_utils.core.paths import REPO_ROOT, LabPathError, output_dir
from lab_utils.training.preference import (answer_logps, encode_pair_side, preference_summary, score_pairs,
                                           score_unpaired)
from scripts import preference
from tests.helpers import TINY_LM, TINY_SFT

TINY = dict(model=TINY_LM, heldout_rows=4, answer_rows=1, max_steps=2, batch_size=2, lora_r=4, lora_alpha=8,
            max_new_tokens=4, max_seq_length=128, save_steps=1, report_to="none")


# ---------------------------------------------------------------- scoring (lab_utils/training/preference.py)

def test_answer_logps_equal_the_models_own_loss(embedded_model, tokenizer):
    """The summed log-prob of an answer is minus the model's cross-entropy over exactly the answer's tokens."""
    pairs, _ = load_preference_file("preference_ultrafeedback.jsonl")
    prompt, answer = pairs[0]["prompt"], pairs[0]["rejected"]
    sums, counts = answer_logps(embedded_model, tokenizer, [prompt, pairs[1]["prompt"]], [answer, pairs[1]["chosen"]])
    ids, n_prompt = encode_pair_side(tokenizer, prompt, answer, max_length=512)
    labels = torch.tensor([[-100] * n_prompt + ids[n_prompt:]])
    with torch.no_grad():
        loss = embedded_model(input_ids=torch.tensor([ids]), labels=labels).loss.item()
    assert counts[0] == len(ids) - n_prompt
    assert sums[0] == pytest.approx(-loss * counts[0], rel=1e-4)  # row 0 is unaffected by row 1's padding


def test_summaries_dpo_starts_at_chance_orpo_has_an_opinion(embedded_model, tokenizer):
    pairs, _ = load_preference_file("preference_ultrafeedback.jsonl")
    scores = score_pairs(embedded_model, tokenizer, pairs)
    dpo = preference_summary(scores, scores, "dpo", beta=0.1)
    assert dpo["accuracy"] == 0.5 and dpo["margin"] == 0  # the policy is its own reference: every pair a tie
    orpo = preference_summary(scores, None, "orpo", beta=0.1)
    assert orpo["accuracy"] == orpo["likelihood_accuracy"]  # the log odds are monotone in the mean log-prob
    moved = {**scores, "chosen_logp": [c + 1.0 for c in scores["chosen_logp"]]}  # every chosen answer 1 nat likelier
    trained = preference_summary(moved, scores, "dpo", beta=0.1)
    assert trained["accuracy"] == 1.0 and trained["margin"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="method='ipo'"):
        preference_summary(scores, scores, "ipo", beta=0.1)


def test_simpo_and_kto_summaries_measure_what_they_optimise(embedded_model, tokenizer):
    pairs, _ = load_preference_file("preference_ultrafeedback.jsonl")
    scores = score_pairs(embedded_model, tokenizer, pairs)
    simpo = preference_summary(scores, None, "simpo", beta=2.0)
    assert simpo["accuracy"] == simpo["likelihood_accuracy"]  # SimPO's reward is beta x the mean log-prob
    mean = [c / nc - r / nr for c, r, nc, nr in zip(scores["chosen_logp"], scores["rejected_logp"],
                                                     scores["chosen_tokens"], scores["rejected_tokens"])]
    assert simpo["margin"] == pytest.approx(2.0 * sum(mean) / len(mean), abs=1e-4)
    rows = unpair(pairs)
    unpaired = score_unpaired(embedded_model, tokenizer, rows)
    assert unpaired["logp"][0] == pytest.approx(scores["chosen_logp"][0], rel=1e-5)
    assert unpaired["label"][:2] == [True, False]
    kto = preference_summary(unpaired, unpaired, "kto", beta=0.1)
    assert kto["accuracy"] == 0.5 and kto["margin"] == 0 and kto["likelihood_accuracy"] is None  # a tie, as DPO
    # desirable answers 1 nat likelier, undesirable ones 1 nat less likely: every row right, margin beta
    moved = {**unpaired, "logp": [v + (1.0 if ok else -1.0) for v, ok in zip(unpaired["logp"], unpaired["label"])]}
    trained = preference_summary(moved, unpaired, "kto", beta=0.1)
    assert trained["accuracy"] == 1.0 and trained["margin"] == pytest.approx(0.1)


# ---------------------------------------------------------------- the experiment



def test_bad_method_and_missing_init_adapter_fail_before_the_run_folder():
    with pytest.raises(ValueError, match="method='ipo'"):
        preference.run(preference.Params(**TINY, method="ipo"))
    with pytest.raises(LabPathError, match="no LoRA adapter at 'nope'"):
        preference.run(preference.Params(**TINY, init_from="nope"))
    assert not (output_dir() / "preference").exists()


def test_kto_on_pairs_without_conversion_and_pairs_methods_on_unpaired_rows_stop_in_one_line():
    with pytest.raises(SystemExit, match=r"^error: preference_sample.jsonl: method kto needs unpaired rows .*"
                                         r"set kto_from_pairs: true"):
        preference.main(["--method", "kto", "--kto_from_pairs", "false", "--run_name", "kto-pairs"])
    with pytest.raises(SystemExit, match=r"^error: preference_unpaired.jsonl: unpaired rows .* need method kto"):
        preference.main(["--method", "simpo", "--data_file", "preference_unpaired.jsonl", "--run_name", "simpo-rows"])
    with pytest.raises(ValueError, match="batch_size >= 2"):
        preference.load_data(preference.Params(**{**TINY, "batch_size": 1}, method="kto"))
    assert not (output_dir() / "preference").exists()


def test_kto_from_pairs_keeps_each_pair_on_one_side_of_the_split():
    data = preference.load_data(preference.Params(**TINY, method="kto"))
    train, heldout = data.train, data.heldout
    assert len(heldout) == 2 * TINY["heldout_rows"] and sorted(heldout["label"]) == [False] * 4 + [True] * 4
    assert not set(train["source"]) & set(heldout["source"])  # a pair's two answers never straddle the split
    assert set(train["label"][:8]) == {True, False}  # shuffled: TRL's KTO reads rows in order


def test_cli_bad_data_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b"}\n', encoding="utf-8")
    with pytest.raises(SystemExit, match=r"^error: bad.jsonl: no usable preference pairs"):
        preference.main(["--data_file", str(bad)])


@pytest.mark.learning
def test_short_dpo_run_learns_the_preference_and_writes_every_artifact():
    """Seeded: 8 DPO steps of 4 pairs lift held-out preference accuracy well above its 0.5 start.
    (The 0.7 bar is not calibrated yet: no run finished on the loaded development machine.)"""
    p = preference.Params(heldout_rows=12, answer_rows=2, max_steps=8, batch_size=4, max_new_tokens=8,
                          save_steps=4, report_to="none", run_name="short")
    metrics = preference.run(p)["metrics"]
    assert metrics["preference_accuracy_before"] == 0.5 and metrics["preference_margin_before"] == 0
    assert metrics["preference_accuracy_after"] >= 0.7, metrics
    assert metrics["preference_margin_after"] > 0 and metrics["global_step"] == 8
    run = output_dir() / "preference" / "short"
    for name in ("adapter/adapter_config.json", "metrics.json", "history.json", "training.png", "rewards.png",
                 "margins.png", "pairs.csv", "answers.md", "skipped_rows.csv", "run_complete.json"):
        assert (run / name).exists(), name
    adapter = json.loads((run / "adapter/adapter_config.json").read_text())
    assert adapter["r"] == 16 and not (run / "adapter" / "ref").exists()  # DPO's reference copy is not saved
    assert any("rewards/accuracies" in r for r in read_json(run / "history.json"))


@pytest.mark.learning
def test_short_kto_run_learns_from_thumbs_up_and_down():
    """Seeded: 8 KTO steps of 4 unpaired rows (the bundled thumbs-up/down sample) lift the held-out share of rows
    whose implicit reward has the sign their label asks for above its 0.5 start, and the signed margin above 0."""
    p = preference.Params(data_file="preference_unpaired.jsonl", method="kto", heldout_rows=12, answer_rows=1,
                          max_steps=8, batch_size=4, max_new_tokens=4, save_steps=8, report_to="none", run_name="kto")
    metrics = preference.run(p)["metrics"]
    assert metrics["preference_accuracy_before"] == 0.5 and metrics["preference_margin_before"] == 0
    assert metrics["preference_accuracy_after"] > 0.5 and metrics["preference_margin_after"] > 0, metrics
    assert metrics["preference_measure"] == "implicit reward, signed by the label" and metrics["global_step"] == 8
    assert not (output_dir() / "preference" / "kto" / "adapter" / "ref").exists()  # KTO's reference copy is not kept


@pytest.mark.learning
def test_short_simpo_run_raises_the_length_normalised_margin():
    """Seeded: 8 SimPO steps of 4 pairs widen the held-out length-normalised margin it optimises (the untrained
    model already has an opinion, so the test is the direction of the change, with accuracy not falling)."""
    p = preference.Params(method="simpo", beta=2.0, heldout_rows=12, answer_rows=1, max_steps=8, batch_size=4,
                          max_new_tokens=4, save_steps=8, report_to="none", run_name="simpo")
    metrics = preference.run(p)["metrics"]
    assert metrics["preference_measure"] == "length-normalised reward" and metrics["global_step"] == 8
    assert metrics["preference_margin_after"] > metrics["preference_margin_before"], metrics
    assert metrics["preference_accuracy_after"] >= metrics["preference_accuracy_before"], metrics
    assert metrics["likelihood_accuracy_after"] == metrics["preference_accuracy_after"]


def test_orpo_runs_and_measures_log_odds():
    result = preference.run(preference.Params(**TINY, method="orpo", beta=0.2, run_name="orpo"))
    metrics, pairs = result["metrics"], result["pairs"]
    assert metrics["method"] == "orpo" and metrics["preference_measure"] == "log odds ratio"
    assert metrics["global_step"] == 2 and len(pairs) == TINY["heldout_rows"]
    # the accuracy is the share of held-out pairs whose margin (pairs.csv) favours the chosen answer
    assert metrics["preference_accuracy_after"] == pytest.approx((pairs["margin_after"] > 0).mean(), abs=1e-3)
    assert metrics["preference_accuracy_before"] == pytest.approx((pairs["margin_before"] > 0).mean(), abs=1e-3)


def test_init_from_an_sft_run_continues_its_adapter():
    from scripts import sft_alpaca

    sft_alpaca.run(sft_alpaca.Params(**{**TINY_SFT, "max_rows": 16, "max_steps": 1}, run_name="sft"))
    result = preference.run(preference.Params(**{**TINY, "max_steps": 1}, init_from="sft", run_name="from-sft"))
    adapter = json.loads((output_dir() / "preference" / "from-sft" / "adapter/adapter_config.json").read_text())
    assert adapter["r"] == 4 and result["metrics"]["global_step"] == 1  # the SFT adapter's shape, trained on

    other = output_dir() / "elsewhere"
    shutil.copytree(output_dir() / "sft_alpaca" / "sft", other)
    params = json.loads((other / "params.json").read_text())
    (other / "params.json").write_text(json.dumps({**params, "model": "Qwen/Qwen2.5-0.5B-Instruct"}))
    with pytest.raises(ValueError, match="trained on 'Qwen/Qwen2.5-0.5B-Instruct'"):
        preference.load_data(preference.Params(**TINY, init_from=str(other)))


@pytest.mark.notebook
def test_notebook_runs_under_papermill(tmp_path):
    out = tmp_path / "executed.ipynb"
    execute(NOTEBOOKS_DIR / "preference.ipynb", out, {**TINY, "run_name": "nb"})
    run = output_dir() / "preference" / "nb"
    assert (run / "run_complete.json").exists()
    executed = json.loads(out.read_text())
    images = [o for c in executed["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the reward curves and the margins are shown"
    assert read_json(run / "metrics.json")["global_step"] == 2


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_gpu_config_trains_with_unsloth(method):
    """The GPU config's settings (4-bit, Unsloth, its DPO patch) on the embedded model (no network on the box)."""
    config = yaml.safe_load((REPO_ROOT / "configs" / "preference_gpu.yaml").read_text())
    params = {**config, **TINY, "model": "smollm2-135m", "method": method, "run_name": f"gpu-{method}"}
    metrics = preference.run(preference.Params(**params))["metrics"]
    assert metrics["backend"] == "unsloth" and metrics["device"] == "cuda" and metrics["global_step"] == 2
