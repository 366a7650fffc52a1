"""The throughput benchmark's harness works (no timing is asserted: speed is for benchmarks/)."""

import json

import pytest

from benchmarks import sft_throughput



def test_benchmark_measures_both_paths_on_the_same_rows(tmp_path, capsys):
    out = tmp_path / "bench.json"
    # one timed step each: TRL's default bf16 autocast is emulated (slow) on CPUs without native bf16
    ratio = sft_throughput.main(["--rows", "16", "--steps", "2", "--warmup", "1", "--batch_size", "2", "--lora_r", "4",
                                 "--max_length", "128", "--skip_fp32", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["lab"]["timed_tokens"] > 0 and result["trl"]["timed_tokens"] > 0
    assert result["ratio"] == pytest.approx(ratio, rel=1e-3) and ratio > 0
    assert "ratio lab / TRL" in capsys.readouterr().out
