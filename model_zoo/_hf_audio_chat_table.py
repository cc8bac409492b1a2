"""What differs between the speech-LLM families that transformers ships natively, in one table.

`hf_audio_chat.py` drives every family the same way (the folder's own processor, chat template and
model class); the few choices a family's official inference makes differently live here, keyed by
the config's `model_type`, and each chosen entry is written into `describe()` so results.json says
which convention was applied. A `model_type` absent from the table runs with `GENERIC` (the chat
template's own system prompt, audio before the text, one audio part per clip unless the processor,
tried once at load with two parts, takes one audio per turn: then the clips are joined).

Sources, per family (read for fidelity, nothing copied):
- Audio Flamingo 3 (`nvidia/audio-flamingo-3-hf`; transformers `AudioFlamingo3Processor`): the chat
  template always puts `<sound>` before the user's text and supplies "You are a helpful assistant."
  when no system turn is given; the processor pairs exactly one audio with each text, so a
  multi-clip sample is joined into one signal (`Prompt.single_waveform`); it cuts audio into 30 s
  windows and truncates past `max_audio_len` (600 s), which becomes the skip limit. Transcription
  answers come framed ('The spoken content of the audio is "..."'); the processor's
  `strip_prefix` removes the framing, applied only to answers that open with it.
- Qwen3-ASR (`Qwen/Qwen3-ASR-*-hf`; transformers `Qwen3ASRProcessor.apply_transcription_request`,
  QwenLM/Qwen3-ASR `transcribe`): an ASR-only model; the user turn holds only the audio (the released
  template renders no user text), the system turn an optional biasing context (empty by default),
  so the task instruction is not sent, and candidate scoring is not offered; the
  answer comes as `language <NAME><asr_text><transcript>` and the processor's own
  `decode(return_format="transcription_only")` keeps the transcript; one audio per text; the feature
  extractor never truncates, so there is no per-clip limit of the processor's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

AudioPosition = Literal["before", "after"]
InstructionPolicy = Literal["user", "drop"]
OutputFormat = Literal["text", "qwen3_asr_transcription"]
UNSET = -1.0  # `max_audio_s` sentinel: take the limit from the processor
PROBE = -1  # `max_audio_parts` sentinel: ask the processor at load whether a turn takes two audio parts


@dataclass(frozen=True)
class FamilySettings:
    """One family's deviations from the generic chat call."""

    family: str  # a human name for describe()
    system_prompt: str | None = None  # None: the chat template's own default (or none)
    audio_position: AudioPosition = "before"  # audio parts before or after the instruction text
    instruction: InstructionPolicy = "user"  # "drop": the family's official inference sends no instruction
    audio_keyword: str = "audio"  # the processor's keyword for waveforms
    # more clips than this are joined into one (single_waveform); PROBE: try two parts at load
    max_audio_parts: int | None = PROBE
    max_audio_s: float | None = UNSET  # UNSET: read from the processor; None: no limit
    output: OutputFormat = "text"  # how the generated ids become the answer text
    answer_prefixes: tuple[str, ...] = ()  # framing the processor's `strip_prefix` removes, when present
    source: str = ""  # the official code the entry follows

    def to_json(self) -> dict[str, Any]:
        entry = asdict(self)
        if entry["max_audio_s"] == UNSET:
            entry["max_audio_s"] = "from the processor"
        if entry["max_audio_parts"] == PROBE:
            entry["max_audio_parts"] = "probed at load"
        return entry


GENERIC = FamilySettings(family="generic transformers audio chat model",
                         source="the folder's own chat template")

FAMILIES: dict[str, FamilySettings] = {
    "audioflamingo3": FamilySettings(
        family="Audio Flamingo 3",
        audio_position="before",
        max_audio_parts=1,
        answer_prefixes=("The spoken content of the audio is", "The transcription of the audio is",
                         "The content of the input audio is"),
        source="nvidia/audio-flamingo-3-hf chat template; transformers AudioFlamingo3Processor",
    ),
    "qwen3_asr": FamilySettings(
        family="Qwen3-ASR",
        instruction="drop",
        max_audio_parts=1,
        max_audio_s=None,
        output="qwen3_asr_transcription",
        source="QwenLM/Qwen3-ASR transcribe(); transformers Qwen3ASRProcessor.apply_transcription_request",
    ),
}


def settings_for(model_type: str) -> FamilySettings:
    """The table entry of `model_type`, or the generic settings."""
    return FAMILIES.get(model_type, GENERIC)
