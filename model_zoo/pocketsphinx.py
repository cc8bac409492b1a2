"""PocketSphinx (CMU, via the `pocketsphinx` wheel): a real offline English ASR baseline.

The wheel ships a full en-US acoustic model, a generic trigram LM and the CMU dictionary, so the
harness does genuine speech recognition on any machine without a download. It ignores the
instruction text: it only transcribes. Deterministic (no sampling), CPU only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wavllm_eval.adapter import BaseAdapter, LoadOptions
from wavllm_eval.registry import register_model
from wavllm_eval.types import SAMPLE_RATE_HZ, Generation, Prompt


@register_model("pocketsphinx")
class PocketSphinxAdapter(BaseAdapter):
    """CMU PocketSphinx 5 with its bundled en-US model: offline ASR baseline (ignores instructions)."""

    default_batch_size = 1

    def __init__(self, decoder: Any, model_dir: Path | None) -> None:
        self.decoder = decoder
        self.path = model_dir

    @classmethod
    def load(cls, path: Path | None = None, options: LoadOptions = LoadOptions()) -> PocketSphinxAdapter:
        """`path`: an acoustic-model folder with `mdef` etc. beside `*.lm.bin` and `*.dict`; by default
        the model bundled in the wheel."""
        from pocketsphinx import Config, Decoder

        if path is None:
            return cls(Decoder(samprate=SAMPLE_RATE_HZ, loglevel="FATAL"), None)
        path = Path(path)
        config = Config(samprate=SAMPLE_RATE_HZ, loglevel="FATAL", hmm=str(path))
        lm = next(iter(sorted(path.parent.glob("*.lm.bin"))), None)
        dictionary = next(iter(sorted(path.parent.glob("*.dict"))), None)
        if lm is not None:
            config["lm"] = str(lm)
        if dictionary is not None:
            config["dict"] = str(dictionary)
        return cls(Decoder(config), path)

    def generate(self, prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[Generation]:
        return [self._transcribe(p) for p in prompts]

    def _transcribe(self, prompt: Prompt) -> Generation:
        audio = prompt.single_waveform()
        pcm16 = np.clip(np.round(audio * 32768.0), -32768, 32767).astype("<i2")
        # The feature front end keeps cepstral-mean state across utterances: reset it, so a
        # sample's transcript never depends on what was decoded before it (order, resume point).
        self.decoder.reinit_feat()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm16.tobytes(), full_utt=True)
        self.decoder.end_utt()
        hypothesis = self.decoder.hyp()
        text = hypothesis.hypstr if hypothesis is not None else ""
        return Generation(text=text, n_new_tokens=len(text.split()))

    def describe(self) -> Mapping[str, Any]:
        from importlib.metadata import version

        return {"id": self.id, "path": str(self.path) if self.path else "bundled en-us",
                "pocketsphinx": version("pocketsphinx")}
