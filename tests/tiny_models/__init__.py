"""Tiny random model folders, one module per model family (the registry-wide contract tests use them).

Each module defines `BUILDERS: dict[str, Callable[[Path], Path]]`: model id -> a function that writes a
tiny random model folder under the given directory (save_pretrained, or the released layout) and
returns the path to pass as --model-path. A registered model with no builder fails the contract test.
"""
