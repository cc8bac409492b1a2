"""Metrics keep sufficient statistics, one row per sample, so corpus values are exact, shards merge
by concatenation, a bootstrap resamples rows, and `gate` pairs two runs' rows by sample id."""
