"""Qwen-Audio (v1) on transformers parts: the audio tower and the Qwen-7B LM, no remote code.

Follows `QwenLM/Qwen-Audio` `audio.py`, `modeling_qwen.py`, `tokenization_qwen.py` at b50fb95 (shared
reference qwen_audio.md §2 and §4.3); imported only by the adapter's `load` (torch at module level).

- Front end (`audio.py`): openai-whisper's 80-bin log-mel of the clip padded (or cut) to 30 s; the
  encoder sees only the first `2 * T_cnn` frames, with `mel_len = n_samples // 160` and
  `T_cnn = (mel_len - 1) // 2 + 1` (`get_T_after_cnn`), and keeps `n_tok = (T_cnn - 2) // 2 + 1` tokens.
- Audio tower (`AudioEncoder`): conv1 -> GELU -> conv2 (stride 2) -> GELU -> + sinusoidal positions ->
  Whisper blocks -> AvgPool1d(2) -> ln_post -> proj (1280 -> 4096); its learned `audio_bos_eos_token`
  rows enclose the tokens. Built from `Qwen2AudioEncoder` submodules (same block equations: pre-LN,
  q scaled by head_dim^-0.5 where openai-whisper scales q and k by head_dim^-0.25, key without bias),
  run by our own forward on the truncated mel, which equals the release's batch-size-1 computation.
  The release's batched encoder is not its own batch size 1: a shorter clip's last frames convolve
  the neighbouring padded mel frames instead of zero padding, and attention carries that to every
  position of the clip (up to 0.1 on tiny random weights, checked by running the release's audio.py);
  a candidate cause of the batch-size degradation in QwenLM/Qwen-Audio#43. We encode every clip alone
  (the release's batch-size-1 result, equal to 2e-6), so batching never changes a result.
- LM (`QWenModel`): equals `Qwen2ForCausalLM` (RMSNorm eps 1e-5, rotate-half RoPE base 10000, qkv
  bias, no o_proj bias, `c_proj(w1(x) * silu(w2(x)))` = `down(up(x) * silu(gate(x)))`, untied head)
  after the weight rename of `_qwen_audio_checkpoint`. Dynamic NTK and logn attention change nothing
  up to `seq_length` (2048) positions; beyond that this port keeps plain RoPE (see `describe`).
- Fusion (`QWenModel.forward`): the embeddings from `<audio>` through `</audio>` inclusive are
  overwritten by `[bos, audio tokens, eos]`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wavllm_eval.errors import InputError

SAMPLE_RATE_HZ = 16_000
N_FFT, HOP_LENGTH = 400, 160
MAX_SAMPLES = 30 * SAMPLE_RATE_HZ  # pad_or_trim: 480,000 samples, 3,000 mel frames


@dataclass(frozen=True)
class QwenAudioDims:
    """The fields of the release's `config.json` (QWenConfig with its `audio` sub-dict) that shape the net."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    mlp_size: int  # the release's `intermediate_size // 2`
    rms_norm_eps: float
    rope_base: float
    seq_length: int
    max_position_embeddings: int
    n_mels: int
    n_ctx: int
    n_state: int
    n_head: int
    n_layer: int
    output_dim: int
    audio_start_id: int

    @property
    def audio_end_id(self) -> int:
        return self.audio_start_id + 1  # the release looks up `</audio>` as audio_start_id + 1


def dims_from_config(config: Mapping[str, Any], where: Any = "config.json") -> QwenAudioDims:
    """Read the release's config; refuse the variants this port does not implement, naming the field."""
    audio = config.get("audio")
    if not isinstance(audio, Mapping):
        raise InputError(where, "no `audio` section: not a Qwen-Audio (v1) config", "use Qwen/Qwen-Audio(-Chat)")
    checks = {
        "no_bias": (config.get("no_bias", True) is True, "true"),
        "rotary_pct": (float(config.get("rotary_pct", 1.0)) == 1.0, "1.0"),
        "kv_channels": (int(config.get("kv_channels", 0)) * int(config["num_attention_heads"])
                        == int(config["hidden_size"]), "hidden_size / num_attention_heads"),
        "tie_word_embeddings": (config.get("tie_word_embeddings", False) is False, "false"),
        "audio.avg_pool": (audio.get("avg_pool", True) is True, "true"),
        "audio.add_audio_bos_eos_token": (audio.get("add_audio_bos_eos_token", True) is True, "true"),
    }
    wrong = [f"{name} (expected {value})" for name, (ok, value) in checks.items() if not ok]
    if wrong:
        raise InputError(where, "unsupported Qwen-Audio variant: " + ", ".join(wrong),
                         "this port implements the released Qwen-Audio(-Chat) architecture")
    try:
        return QwenAudioDims(
            vocab_size=int(config["vocab_size"]), hidden_size=int(config["hidden_size"]),
            num_hidden_layers=int(config["num_hidden_layers"]), num_attention_heads=int(config["num_attention_heads"]),
            mlp_size=int(config["intermediate_size"]) // 2, rms_norm_eps=float(config["layer_norm_epsilon"]),
            rope_base=float(config.get("rotary_emb_base", 10000)), seq_length=int(config.get("seq_length", 2048)),
            max_position_embeddings=int(config.get("max_position_embeddings", 8192)),
            n_mels=int(audio["n_mels"]), n_ctx=int(audio["n_ctx"]), n_state=int(audio["n_state"]),
            n_head=int(audio["n_head"]), n_layer=int(audio["n_layer"]), output_dim=int(audio["output_dim"]),
            audio_start_id=int(audio["audio_start_id"]))
    except KeyError as exc:
        raise InputError(where, f"missing field {exc.args[0]!r}", "use the release's config.json") from exc


# --- front end -------------------------------------------------------------------------------------
def audio_lengths(n_samples: int) -> tuple[int, int]:
    """(T_cnn, n_tok) for a clip of `n_samples` at 16 kHz, the release's floor arithmetic (clips over
    30 s count as 30 s: the release truncates them)."""
    mel_len = min(n_samples, MAX_SAMPLES) // HOP_LENGTH
    t_cnn = (mel_len - 1) // 2 + 1
    return t_cnn, (t_cnn - 2) // 2 + 1


def mel_filter_matrix(n_mels: int = 80) -> np.ndarray:
    """(n_mels, 201) Slaney mel filters, as librosa.filters.mel(sr=16000, n_fft=400) that the release
    ships in mel_filters.npz (equal to 1e-9); used when the folder has no mel_filters.npz."""
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                           max_frequency=SAMPLE_RATE_HZ / 2, sampling_rate=SAMPLE_RATE_HZ, norm="slaney",
                           mel_scale="slaney").T.astype(np.float32)


def log_mel_spectrogram(waveform: np.ndarray, filters: torch.Tensor) -> torch.Tensor:
    """(n_mels, frames): openai-whisper's `log_mel_spectrogram(pad_or_trim(audio))` in float32, its
    first frames only. Every frame not computed here lies wholly in the 30 s zero padding: its log-mel
    is the floor -10, which never raises the maximum the dynamic-range clamp uses, so each returned
    frame equals the padded computation's (the encoder reads only the first 2 * T_cnn of them)."""
    audio = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))[:MAX_SAMPLES]
    # zeros past the clip, so that no kept frame reaches stft's reflection at the end
    length = min(MAX_SAMPLES, audio.shape[0] + 4 * N_FFT)
    audio = F.pad(audio, (0, length - audio.shape[0])).to(filters.device)
    window = torch.hann_window(N_FFT, device=filters.device)
    stft = torch.stft(audio, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    frames = MAX_SAMPLES // HOP_LENGTH if length == MAX_SAMPLES else (length - N_FFT // 2) // HOP_LENGTH + 1
    magnitudes = stft[..., :frames].abs() ** 2
    log_spec = torch.clamp(filters @ magnitudes, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """openai-whisper's fixed positional embedding (the release's `positional_embedding` buffer)."""
    log_increment = np.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_increment * torch.arange(channels // 2))
    scaled = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


# --- the network -----------------------------------------------------------------------------------
class QwenAudioTower(nn.Module):
    """`AudioEncoder`: Whisper encoder (Qwen2AudioEncoder parts) + avg-pool + LN + proj, with BOS/EOS."""

    def __init__(self, dims: QwenAudioDims) -> None:
        super().__init__()
        from transformers import Qwen2AudioEncoderConfig
        from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder

        config = Qwen2AudioEncoderConfig(num_mel_bins=dims.n_mels, d_model=dims.n_state, encoder_layers=dims.n_layer,
                                         encoder_attention_heads=dims.n_head, encoder_ffn_dim=4 * dims.n_state,
                                         max_source_positions=dims.n_ctx, activation_function="gelu",
                                         scale_embedding=False)
        config._attn_implementation = "sdpa"
        self.encoder = Qwen2AudioEncoder(config)
        self.proj = nn.Linear(dims.n_state, dims.output_dim)
        self.audio_bos_eos_token = nn.Embedding(2, dims.output_dim)

    def forward(self, mel: torch.Tensor, t_cnn: int, n_tok: int) -> torch.Tensor:
        """(n_mels, 3000) log-mel of one clip -> (n_tok + 2, output_dim): [bos, tokens, eos]."""
        enc = self.encoder
        dtype = enc.conv1.weight.dtype
        x = mel[None, :, : 2 * t_cnn].to(dtype)
        x = F.gelu(enc.conv1(x))
        x = F.gelu(enc.conv2(x)).transpose(1, 2)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        for layer in enc.layers:
            out = layer(x, attention_mask=None)
            x = out[0] if isinstance(out, tuple) else out
        x = enc.avg_pooler(x.transpose(1, 2)).transpose(1, 2)
        x = self.proj(enc.layer_norm(x))[0, :n_tok]
        bos_eos = self.audio_bos_eos_token.weight
        return torch.cat([bos_eos[:1], x, bos_eos[1:]], dim=0)


class QwenAudioModel(nn.Module):
    """Audio tower + Qwen LM (as Qwen2ForCausalLM); `embed` splices the audio into the text embeddings."""

    def __init__(self, dims: QwenAudioDims) -> None:
        super().__init__()
        from transformers import Qwen2Config, Qwen2ForCausalLM

        self.dims = dims
        config = Qwen2Config(vocab_size=dims.vocab_size, hidden_size=dims.hidden_size,
                             intermediate_size=dims.mlp_size, num_hidden_layers=dims.num_hidden_layers,
                             num_attention_heads=dims.num_attention_heads,
                             num_key_value_heads=dims.num_attention_heads, rms_norm_eps=dims.rms_norm_eps,
                             rope_theta=dims.rope_base, max_position_embeddings=dims.max_position_embeddings,
                             tie_word_embeddings=False, use_sliding_window=False, hidden_act="silu")
        config._attn_implementation = "sdpa"
        self.audio = QwenAudioTower(dims)
        self.llm = Qwen2ForCausalLM(config)

    def encode_audio(self, mels: Sequence[tuple[torch.Tensor, int, int]]) -> list[torch.Tensor]:
        """One (n_tok + 2, dim) tensor per (mel, T_cnn, n_tok), each clip encoded alone."""
        return [self.audio(mel, t_cnn, n_tok) for mel, t_cnn, n_tok in mels]

    def embed(self, input_ids: torch.Tensor, audio: Sequence[torch.Tensor]) -> torch.Tensor:
        """(L,) ids -> (L, dim) embeddings, each `<audio>`..`</audio>` span overwritten by its clip's
        [bos, tokens, eos], in order (`QWenModel.forward`)."""
        embeds = self.llm.model.embed_tokens(input_ids)
        starts = (input_ids == self.dims.audio_start_id).nonzero().flatten().tolist()
        ends = (input_ids == self.dims.audio_end_id).nonzero().flatten().tolist()
        if len(starts) != len(ends) or len(starts) != len(audio):
            raise ValueError(f"{len(starts)} <audio> and {len(ends)} </audio> tags for {len(audio)} clips")
        if not starts:
            return embeds
        pieces, cursor = [], 0
        for start, end, clip in zip(starts, ends, audio, strict=True):
            if end - start + 1 != clip.shape[0]:
                raise ValueError(f"audio span of {end - start + 1} positions for {clip.shape[0]} audio vectors")
            pieces.extend([embeds[cursor:start], clip.to(embeds.dtype)])
            cursor = end + 1
        pieces.append(embeds[cursor:])
        return torch.cat(pieces, dim=0)
