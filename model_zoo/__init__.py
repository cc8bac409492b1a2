"""Model adapters: one module per model, each registering its id with @register_model.

Modules here import in milliseconds: torch and transformers are imported inside `load`.
"""
