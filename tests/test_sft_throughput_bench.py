"""The throughput benchmark's harness works (no timing is asserted: speed is for benchmarks/)."""

import json

import pytest

from benchmarks import sft_throughput
from tests.helpers import TINY_LM


def test_benchmark_measures_both_paths_on_the_same_rows(tmp_path, capsys):
    out = tmp_path / "bench.json"
    # one timed step each: TRL's default bf16 autocast is emulated (slow) on CPUs without native bf16
    ratio = sft_throughput.main(["--model", TINY_LM, "--rows", "16", "--steps", "2", "--warmup", "1",
                                 "--batch_size", "2", "--lora_r", "4", "--max_length", "128", "--skip_fp32",
                                 "--json", str(out)])
    result = json.loads(out.read_text())
    for side in ("lab", "trl"):  # each rate is the real tokens of the timed steps over their seconds
        stats = result[side]
        assert stats["timed_tokens"] >= 2 * 16 and stats["timed_seconds"] > 0, side  # 2 rows of 16+ tokens
        # timed_seconds is rounded to 0.01 s (the tiny model's steps take a few hundredths)
        tokens, seconds = stats["timed_tokens"], stats["timed_seconds"]
        assert tokens / (seconds + 0.005) - 0.05 <= stats["tokens_per_second"] <= tokens / max(seconds - 0.005, 1e-9)
    assert ratio == pytest.approx(result["lab"]["tokens_per_second"] / result["trl"]["tokens_per_second"], rel=1e-3)
    assert result["ratio"] == pytest.approx(ratio, rel=1e-3)
    assert "ratio lab / TRL" in capsys.readouterr().out
