"""Evaluation: base vs tuned answers, text metrics, perplexity, the A/B report."""
