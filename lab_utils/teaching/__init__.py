"""Teaching maths: truncated SVD, ALS, LoRA's low-rank update; Spark ALS for comparison."""
