"""Report writers: read results.json and sample JSONL only; no torch."""
