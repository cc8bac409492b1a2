"""Loading never runs code from a checkpoint, never trusts remote code, never reaches for the hub.

A pickle's `__reduce__` can call anything; the malicious checkpoints here would write a marker file
(and do, under a plain `torch.load(weights_only=False)`: the control that keeps the test honest).
Through `wavllm_eval.safe_load`, `read_official`, `wavllm-eval run` and `wavllm-eval convert` they
are refused with one line naming the file, and the marker never appears.
"""

from __future__ import annotations

import argparse
import builtins
import collections
import collections.abc
import os
import pickle
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from tests.bad_inputs import assert_one_error_line, run_args, run_cli
from tests.librispeech_tree import build_tree
from wavllm_eval.errors import InputError
from wavllm_eval.safe_load import SkippedObject, load_checkpoint, load_state_dict

REPO = Path(__file__).resolve().parents[1]
CODE_DIRS = ("wavllm_eval", "tasks", "model_zoo", "reports")


class WritesMarker:
    """Unpickling this calls os.system: the classic malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class ExecsPython:
    """Unpickling this calls builtins.exec on Python source (not in torch's blocked os/sys list)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


class TrainingMeter:
    """An unknown (non-allow-listed) class, harmless but not ours to construct."""

    def __init__(self) -> None:
        self.avg = 1.0


def _weights() -> dict[str, torch.Tensor]:
    return {"encoder.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "encoder.bias": torch.ones(2)}


def _malicious(path: Path, marker: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = WritesMarker(marker) if kind != "exec" else ExecsPython(marker)
    if kind.startswith("raw-pickle"):  # not torch.save's zip: the legacy path of torch.load
        protocol = 4 if kind.endswith("4") else 2
        path.write_bytes(pickle.dumps({"model": _weights(), "cfg": payload}, protocol=protocol))
    else:
        torch.save({"model": _weights(), "cfg": payload}, path)
    return path


@pytest.mark.parametrize("kind", ["os-system", "exec", "raw-pickle", "raw-pickle-4"])
def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path, kind):
    import warnings

    marker = tmp_path / "MARKER"
    path = _malicious(tmp_path / "final.pt", marker, kind)
    with pytest.raises(InputError) as caught, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        load_checkpoint(path)
    assert [str(w.message) for w in warned] == []  # the error is the one line (torch's protocol notes are not)
    message = str(caught.value)
    assert str(path) in message and "refused" in message and "wavllm-eval convert" in message
    assert "\n" not in message
    assert not marker.exists()

    from wavllm_eval.model_zoo._wavllm_checkpoint import read_official

    with pytest.raises(InputError, match="refused"):
        read_official(path)
    assert not marker.exists()


def test_the_payload_is_real_under_an_unrestricted_load(tmp_path):
    """Control: the same file does write the marker when unpickled without restriction, so the
    refusal above is what keeps it from running."""
    marker = tmp_path / "MARKER"
    path = _malicious(tmp_path / "final.pt", marker, "exec")
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"


def test_fairseq_config_objects_load(tmp_path):
    """A fairseq < 0.10 checkpoint: `args` is an argparse.Namespace, the state dict an OrderedDict,
    `extra_state` holds numpy scalars and nested OrderedDicts."""
    import numpy as np

    args = argparse.Namespace(arch="speechllm_model", lr=[1e-4], max_tokens=1_600_000, fp16=True, user_dir=None)
    state = collections.OrderedDict(_weights())
    extra = {"train_iterator": {"epoch": 3, "iterations_in_epoch": 0},
             "val_loss": np.float64(2.25), "best": np.float32(1.5),
             "metrics": collections.OrderedDict(train=collections.OrderedDict(loss=(0, "AverageMeter", {"val": 2.0})))}
    path = tmp_path / "final.pt"
    torch.save({"args": args, "model": state, "optimizer_history": [{"num_updates": 10}], "extra_state": extra},
               path)
    loaded = load_checkpoint(path)
    assert isinstance(loaded["args"], argparse.Namespace) and loaded["args"].lr == [1e-4]
    assert loaded["extra_state"]["val_loss"] == 2.25
    assert isinstance(loaded["model"], collections.OrderedDict)
    weights = load_state_dict(path)
    assert list(weights) == ["encoder.weight", "encoder.bias"]
    torch.testing.assert_close(weights["encoder.weight"], _weights()["encoder.weight"])


def test_read_official_takes_the_model_entry_of_a_fairseq_checkpoint(tmp_path):
    """read_official (WavLLM) through safe_load: `model` of a fairseq checkpoint with its training
    state beside it, FSDP's `_checkpoint_wrapped_module.` stripped from the keys."""
    import numpy as np
    from wavllm_eval.model_zoo._wavllm_checkpoint import read_official

    weights = {"gpt_model.model_llama._checkpoint_wrapped_module.norm.weight": torch.ones(4),
               "audio_proj.weight": torch.zeros(2, 2)}
    path = tmp_path / "final.pt"
    torch.save({"args": argparse.Namespace(task="speechllm_task"), "cfg": {"model": {"_name": "speechllm_model"}},
                "model": collections.OrderedDict(weights), "optimizer_history": [{"lr_scheduler_state": {"best": 0.5}}],
                "extra_state": {"val_loss": np.float64(1.0)}, "last_optimizer_state": None}, path)
    state = read_official(path)
    assert sorted(state) == ["audio_proj.weight", "gpt_model.model_llama.norm.weight"]
    with pytest.raises(InputError, match="checkpoint not found"):
        read_official(tmp_path / "absent.pt")


def test_omegaconf_config_is_skipped_without_running_it(tmp_path, monkeypatch):
    """A fairseq 0.10 `cfg` pickled as omegaconf objects loads as inert stand-ins (omegaconf need
    not be installed; none of its code runs). Stand-in modules give the classes omegaconf's paths."""
    calls: list[str] = []

    def fake_module(name: str, **classes: type) -> types.ModuleType:
        module = types.ModuleType(name)
        for cls_name, cls in classes.items():
            cls.__module__, cls.__qualname__, cls.__name__ = name, cls_name, cls_name
            setattr(module, cls_name, cls)
        monkeypatch.setitem(sys.modules, name, module)
        return module

    class Metadata:
        def __init__(self) -> None:
            self.ref_type, self.object_type, self.key = dict, dict, None

    class AnyNode:
        def __init__(self, value) -> None:
            self._val, self._metadata = value, Metadata()

        def __setstate__(self, state) -> None:  # what must never run at load time
            calls.append("AnyNode.__setstate__")
            self.__dict__.update(state)

    class DictConfig:
        def __init__(self, content) -> None:
            self._content = {k: AnyNode(v) for k, v in content.items()}
            self._metadata = Metadata()

        def __setstate__(self, state) -> None:
            calls.append("DictConfig.__setstate__")
            self.__dict__.update(state)

    fake_module("omegaconf")
    fake_module("omegaconf.dictconfig", DictConfig=DictConfig)
    fake_module("omegaconf.nodes", AnyNode=AnyNode)
    fake_module("omegaconf.base", ContainerMetadata=Metadata)
    path = tmp_path / "checkpoint_best.pt"
    torch.save({"cfg": DictConfig({"lr": 0.0001, "arch": "speechllm_model"}), "model": _weights()}, path)
    calls.clear()
    for name in ("omegaconf", "omegaconf.dictconfig", "omegaconf.nodes", "omegaconf.base"):
        monkeypatch.delitem(sys.modules, name)

    loaded = load_checkpoint(path)
    assert isinstance(loaded["cfg"], SkippedObject) and calls == []
    assert list(load_state_dict(path)) == ["encoder.weight", "encoder.bias"]


def test_unknown_class_is_refused_by_name(tmp_path):
    path = tmp_path / "final.pt"
    torch.save({"model": _weights(), "extra_state": {"meter": TrainingMeter()}}, path)
    with pytest.raises(InputError, match=r"refused to unpickle `tests\.test_security\.TrainingMeter`"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf<html>link expired</html>", b"PK\x03\x04 cut zip"])
def test_garbage_checkpoint_is_an_input_error(tmp_path, content):
    """WavLLM issue #78: an expired download link saves an HTML page as final.pt."""
    path = tmp_path / "final.pt"
    path.write_bytes(content)
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(path)


def test_truncated_zip_checkpoint_and_bad_safetensors_are_input_errors(tmp_path):
    path = tmp_path / "final.pt"
    torch.save({"model": _weights()}, path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(path)
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json header}")
    with pytest.raises(InputError, match="safetensors"):
        load_checkpoint(bad)


def test_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file(_weights(), str(path))
    loaded = load_state_dict(path)
    torch.testing.assert_close(loaded["encoder.weight"], _weights()["encoder.weight"])


def test_non_tensor_state_dict_entries_are_refused(tmp_path):
    path = tmp_path / "final.pt"
    torch.save({"model": {"w": torch.ones(1), "note": "hello"}}, path)
    with pytest.raises(InputError, match="not tensors"):
        load_state_dict(path)


# --- the CLI on a malicious WavLLM folder -------------------------------------------------------------
@pytest.fixture(scope="module")
def malicious_wavllm(tmp_path_factory, shared_data):
    """A tiny WavLLM folder in the released layout whose final.pt would write MARKER."""
    from tests.wavllm_tiny import build_tiny_wavllm

    root = tmp_path_factory.mktemp("evil_wavllm")
    folder, _ = build_tiny_wavllm(root / "model", shared_data / "llama2_tokenizer.model")
    marker = root / "MARKER"
    _malicious(folder / "final.pt", marker, "os-system")
    return folder, marker


def test_cli_run_refuses_a_malicious_checkpoint(tmp_path, malicious_wavllm):
    folder, marker = malicious_wavllm
    data = build_tree(tmp_path / "data") / "LibriSpeech" / "test-clean"
    result = run_cli(run_args("librispeech-test-clean", data, tmp_path / "out", "--model-path", str(folder),
                              "--device", "cpu", model="wavllm-greedy"))
    assert_one_error_line(result, str(folder / "final.pt"), "refused")
    assert not marker.exists()
    assert not list((tmp_path / "out").rglob("*.jsonl"))


def test_cli_convert_refuses_a_malicious_checkpoint(tmp_path, malicious_wavllm):
    folder, marker = malicious_wavllm
    result = run_cli(["convert", "--model", "wavllm", "--model-path", str(folder), "--output-dir", str(tmp_path / "conv")])
    assert_one_error_line(result, str(folder / "final.pt"), "refused")
    assert not marker.exists()
    assert not (tmp_path / "conv").exists()


# --- no remote code, no torch.load outside safe_load, no hub ---------------------------------------------
def _code_files() -> list[Path]:
    return [p for d in CODE_DIRS if (REPO / d).is_dir() for p in sorted((REPO / d).rglob("*.py"))]


def test_trust_remote_code_is_never_true():
    pattern = re.compile(r"trust_remote_code\s*(=|:|\"\s*:|'\s*:)\s*(True|1\b)")
    offenders = [f"{p.relative_to(REPO)}:{n}" for p in _code_files()
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1)
                 if pattern.search(line)]
    assert offenders == []
    assert len(_code_files()) > 10  # the scan saw the code


def _grep(pattern: re.Pattern[str], allowed: set[Path] = frozenset()) -> list[str]:
    return [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in _code_files() if p not in allowed
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1)
            if pattern.search(line) and not line.lstrip().startswith("#")]


def test_nothing_unpickles_unrestricted():
    """No weights_only=False, no bare pickle/joblib load, no torch.load without weights_only=True,
    anywhere in the package (safe_load's explicit `trusted` path excepted)."""
    unsafe = re.compile(r"weights_only\s*=\s*False|\bpickle\.loads?\(|\bjoblib\.load\(|\bdill\.load")
    assert _grep(unsafe, {REPO / "wavllm_eval" / "safe_load.py"}) == []
    loads = re.compile(r"(?<!`)\btorch\.load\((?!.*weights_only\s*=\s*True)")
    assert _grep(loads, {REPO / "wavllm_eval" / "safe_load.py"}) == []


def test_every_adapter_loads_checkpoints_through_safe_load():
    """One loader for all adapters, so the allow-list, the refusal message and the way out are the
    same everywhere: no torch.load outside wavllm_eval/safe_load.py."""
    assert _grep(re.compile(r"(?<!`)\btorch\.load\("), {REPO / "wavllm_eval" / "safe_load.py"}) == []


_NO_NETWORK = """
import os, socket, sys, time
def refuse(*args, **kwargs):
    print("NETWORK-ATTEMPT", args[1:] if len(args) > 1 else args, flush=True)
    os._exit(3)  # fail at the first attempt, not after the hub client's 23 s of retries
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.getaddrinfo = refuse
socket.create_connection = refuse
import wavllm_eval.cli  # the harness entry point sets the offline default
offline = os.environ.get("HF_HUB_OFFLINE")
from transformers import AutoConfig
started = time.perf_counter()
try:
    AutoConfig.from_pretrained("wavllm-eval-test/no-such-model-anywhere")
    outcome = "loaded"
except OSError as exc:
    outcome = "OSError"
print(offline, outcome, round(time.perf_counter() - started, 2))
"""


def test_harness_defaults_to_offline_and_never_tries_the_hub():
    """With no HF_HUB_OFFLINE in the environment, importing the harness makes the hub offline:
    a from_pretrained on a hub id fails at once, without a single connection attempt."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "HUGGINGFACE_"))}
    env["HF_HOME"] = str(Path("/nonexistent-hf-home"))
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _NO_NETWORK], capture_output=True, text=True, env=env, timeout=120)
    assert "NETWORK-ATTEMPT" not in out.stdout, out.stdout[-1000:]
    assert out.returncode == 0, out.stderr[-2000:]
    offline, outcome, seconds = out.stdout.split()[-3:]
    assert offline == "1"
    assert outcome == "OSError" and float(seconds) < 5.0
    assert time.perf_counter() - started < 60


def test_damaged_checkpoints_are_input_errors(tmp_path):
    """Bytes flipped or cut anywhere in a real checkpoint (zip and legacy formats): a state dict or
    InputError, never another exception."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    sources = []
    for legacy in (False, True):
        path = tmp_path / f"source_{legacy}.pt"
        torch.save({"args": argparse.Namespace(lr=1.0), "model": _weights()}, path,
                   _use_new_zipfile_serialization=not legacy)
        sources.append(path.read_bytes())

    @settings(max_examples=60, deadline=None, derandomize=True, database=None)
    @given(st.sampled_from(sources), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4),
           st.floats(0, 1))
    def damaged(source, flips, keep):
        data = bytearray(source)
        for where, value in flips:
            data[min(int(where * len(data)), len(data) - 1)] = value
        path = tmp_path / "final.pt"
        path.write_bytes(bytes(data[: max(1, int(keep * len(data)))] if keep < 0.9 else data))
        try:
            state = load_checkpoint(path)
        except InputError as exc:
            assert "\n" not in str(exc)
        else:
            assert isinstance(state, collections.abc.Mapping)

    damaged()
