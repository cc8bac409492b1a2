"""Load checkpoint files without running code from them: the one place the harness unpickles.

A `.pt` / `.bin` checkpoint is a pickle, and unpickling an arbitrary pickle can call any function
(`os.system` in a `__reduce__`). So every adapter loads weights through `load_checkpoint`:

* `.safetensors`: read with safetensors (no pickle at all);
* anything else: `torch.load(weights_only=True)`, torch's restricted unpickler, which builds
  tensors and plain containers only. On top of torch's own list we allow exactly the objects a
  released fairseq checkpoint holds beside its tensors (fairseq `checkpoint_utils.save_state`:
  its training configuration and logging state): `argparse.Namespace` (fairseq < 0.10 `args`), numpy scalars and dtypes (`best_score`,
  meters in `extra_state`) and `collections.defaultdict`. omegaconf `DictConfig`/`ListConfig`
  and their node and metadata classes (fairseq 0.10 `cfg`) are *not* run: their names, and the
  type objects their metadata names (`builtins.dict`, `typing.Any`), are mapped onto inert
  `SkippedObject` stand-ins, so omegaconf need not be installed and none of its code executes.

Anything else is refused before it is called, with one line naming the file and the object, and
the way out (convert once from a trusted copy). `trusted=True` is that way out: plain
`torch.load(weights_only=False)`, for a file the user vouches for (`wavllm-eval convert
--trust-pickle`); nothing in the harness passes it by default.
"""

from __future__ import annotations

import argparse
import collections
import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wavllm_eval.errors import InputError

TRUST_FIX = ("if you trust this file, convert it once from a trusted copy with "
             "`wavllm-eval convert --trust-pickle`, then load the converted model.safetensors")

# omegaconf classes a fairseq 0.10 `cfg` pickles (omegaconf 2.0-2.3 module paths); mapped to
# SkippedObject, never imported.
OMEGACONF_NAMES = tuple(
    f"omegaconf.{name}" for name in (
        "dictconfig.DictConfig", "listconfig.ListConfig", "basecontainer.BaseContainer",
        "base.Container", "base.ContainerMetadata", "base.Metadata", "base.Node", "base.Box",
        "nodes.ValueNode", "nodes.AnyNode", "nodes.StringNode", "nodes.IntegerNode", "nodes.FloatNode",
        "nodes.BooleanNode", "nodes.EnumNode", "nodes.BytesNode", "nodes.PathNode", "nodes.InterpolationResultNode",
        "_utils.ValueKind", "flags_override",
    )
)
# Type objects omegaconf metadata names (ref_type, key_type, element_type): only ever referred to,
# so stand-ins do (a real `builtins.bytes` would let a pickle allocate bytes(10**12)).
TYPE_NAMES = tuple(f"builtins.{t}" for t in ("dict", "list", "tuple", "str", "int", "float", "bool", "bytes",
                                            "object")) + ("typing.Any", "typing.Dict", "typing.List")


class SkippedObject:
    """Stands in for a configuration object we do not run (omegaconf). Keeps its pickled state as
    plain data (already restricted to tensors and containers) and has no behaviour."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return "SkippedObject()"


def _skipped_class(full_name: str) -> type:
    module, _, name = full_name.rpartition(".")
    return type(name, (SkippedObject,), {"__module__": "wavllm_eval.safe_load.skipped", "original": full_name})


def allowed_globals() -> list[Any]:
    """The allow-list on top of torch's own (tensors, storages, OrderedDict, Counter, set...)."""
    import numpy as np

    allowed: list[Any] = [argparse.Namespace, collections.OrderedDict, collections.defaultdict]
    # numpy scalars pickle as multiarray.scalar(dtype, bytes); numpy 1.x writes numpy.core, 2.x numpy._core
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    allowed += [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
                (np.dtype, "numpy.dtype")]
    for code in ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"):
        dtype_class = type(np.dtype(code))
        if dtype_class is not np.dtype:  # numpy >= 1.25: one class per dtype (numpy.dtypes.Float64DType)
            allowed.append((dtype_class, f"numpy.dtypes.{dtype_class.__name__}"))
            allowed.append(dtype_class)
    allowed += [(_skipped_class(name), name) for name in OMEGACONF_NAMES + TYPE_NAMES]
    return allowed


def load_checkpoint(path: Path | str, trusted: bool = False) -> Mapping[str, Any]:
    """The top-level object of a checkpoint: a safetensors file's tensors, or the unpickled dict.

    Raises InputError for a missing, corrupt or unsafe file (one line: file, problem, fix)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found" if not path.exists() else "checkpoint is not a file",
                         "check --model-path")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    import torch

    is_zip = zipfile.is_zipfile(path)
    try:
        with warnings.catch_warnings():
            # torch's notes on pickle protocols: the one error line below says what is wrong
            warnings.simplefilter("ignore", UserWarning)
            if trusted:
                state = torch.load(str(path), map_location="cpu", weights_only=False)
            else:
                with _allow_listed():
                    state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        blocked = _blocked_name(str(exc))
        if blocked is not None:
            raise InputError(path, f"refused to unpickle `{blocked}`: a checkpoint may hold only tensors "
                             "and known training-config objects", TRUST_FIX) from None
        if not is_zip and _first_byte(path) == b"\x80":  # a pickle's PROTO opcode, without torch's framing
            raise InputError(path, "refused to read a bare pickle (not a torch.save checkpoint)", TRUST_FIX) from None
        raise InputError(path, f"not a readable PyTorch checkpoint ({_unpickling_detail(str(exc))})",
                         "download it again; a partial or HTML download is not a checkpoint") from None
    except EOFError:
        raise InputError(path, "not a readable PyTorch checkpoint (the file ends early)",
                         "download it again; a partial or HTML download is not a checkpoint") from None
    except (RuntimeError, ValueError, OSError, zipfile.BadZipFile, KeyError, TypeError, AttributeError,
            IndexError, struct.error, OverflowError, MemoryError) as exc:  # what torch and a malformed pickle raise
        raise InputError(path, f"not a readable PyTorch checkpoint ({_first_line(exc)})",
                         "download it again; a partial or HTML download is not a checkpoint") from None
    if not isinstance(state, Mapping):
        raise InputError(path, f"holds a {type(state).__name__}, not a state dict", "pass the released checkpoint")
    return state


def load_state_dict(path: Path | str, trusted: bool = False) -> dict[str, Any]:
    """The tensors of a checkpoint: `state["model"]` of a fairseq checkpoint, else the dict itself
    (a bare state dict, or safetensors); the training config and optimizer state are dropped."""
    import torch

    state = load_checkpoint(path, trusted=trusted)
    weights = state.get("model", state)
    if not isinstance(weights, Mapping):
        raise InputError(path, "its `model` entry is not a state dict", "pass the released checkpoint")
    bad = [str(k) for k, v in weights.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(path, f"{len(bad)} state-dict entries are not tensors (e.g. {bad[0]!r})",
                         "pass the released checkpoint")
    return dict(weights)


@contextmanager
def _allow_listed() -> Iterator[None]:
    import torch

    with torch.serialization.safe_globals(allowed_globals()):
        yield


def _load_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(path, f"not a readable safetensors file ({_first_line(exc)})",
                         "re-run `wavllm-eval convert`, or download it again") from None


_REFUSAL = re.compile(r"GLOBAL (\S+)|unrecognized function (\S+)|but got <class '([^']+)'>")


def _blocked_name(message: str) -> str | None:
    """The global torch's restricted unpickler refused, from its message (None: the file is not a
    pickle torch can read at all, e.g. an HTML page saved as final.pt)."""
    match = _REFUSAL.search(message)
    return next(g for g in match.groups() if g) if match else None


def _unpickling_detail(message: str) -> str:
    """The specific line of torch's long weights-only message ("Unsupported operand 239")."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.partition("WeightsUnpickler error:")[2].strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else "corrupt pickle")
    return lines[0][:200] if lines else "corrupt pickle"


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch's run on for a paragraph)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0].split(". ")[0][:200] if lines else type(exc).__name__


def _first_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(1)
