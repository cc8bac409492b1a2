"""Task plugins: one module per task family, each registering its ids with @register_task."""
