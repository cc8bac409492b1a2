"""SALMONN's network: Whisper encoder || BEATs -> window-level Q-Former -> Vicuna with LoRA.

Follows bytedance/SALMONN (`models/salmonn.py::_encode_auditory_feature`, `encode_speech`,
`prompt_wrap`; the v1 `model.py` is the same network):

- Whisper: `WhisperEncoder` (transformers) on the 30 s log-mel (3000 frames) -> (B, 1500, 1280), then
  `ln_speech` (trainable LayerNorm).
- BEATs (`_beats.py`) on the raw waveform -> (B, N, 768), N = (T_fbank // 16) * 8, then `ln_audio`,
  then zero-padded *after* the LN to the Whisper length.
- Concatenated on the channel axis -> (B, 1500, 2048), cut by `F.unfold` into non-overlapping windows
  of round(1500 * 0.333333 / 30) = 17 frames (the tail that does not fill a window is dropped):
  88 windows, each its own Q-Former sample.
- Q-Former: transformers' `Blip2QFormerModel` (2 BERT-base layers, cross-attention in every layer,
  only the query path), 1 learned query per window; `speech_llama_proj` Linear(768 -> LLM width).
- Vicuna (`LlamaForCausalLM`) wrapped by peft LoRA (r 8, alpha 32, dropout 0.1, q_proj and v_proj).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

WHISPER_SECONDS = 30.0


@dataclass(frozen=True)
class SalmonnDims:
    """The release's hyper-parameters (`configs/decode_config.yaml`, `init_speech_Qformer`); a model
    folder's `salmonn.json` may override them (the tiny test models do, and `lora_alpha` is SALMONN's
    inference-time knob, "activation tuning")."""

    second_per_window: float = 0.333333
    second_stride: float = 0.333333
    num_query_tokens: int = 1
    qformer_layers: int = 2
    qformer_hidden: int = 768  # BertConfig() / bert-base-uncased
    qformer_heads: int = 12
    qformer_ffn: int = 3072
    qformer_layer_norm_eps: float = 1e-12
    lora_rank: int = 8
    lora_alpha: float = 32.0
    lora_dropout: float = 0.1
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")  # peft's default for llama, as the release gets

    @property
    def lora_scaling(self) -> float:
        return self.lora_alpha / self.lora_rank


def window_geometry(n_frames: int, second_per_window: float, second_stride: float) -> tuple[int, int, int]:
    """(kernel, stride, number of windows) of the release's unfold over `n_frames` Whisper frames
    (the frame rate is fixed by Whisper's 30 s input: n_frames per 30 s)."""
    kernel = round(n_frames * second_per_window / WHISPER_SECONDS)
    stride = round(n_frames * second_stride / WHISPER_SECONDS)
    return kernel, stride, (n_frames - kernel) // stride + 1


def qformer_config(dims: SalmonnDims, encoder_width: int):
    from transformers import Blip2QFormerConfig

    return Blip2QFormerConfig(hidden_size=dims.qformer_hidden, num_hidden_layers=dims.qformer_layers,
                              num_attention_heads=dims.qformer_heads, intermediate_size=dims.qformer_ffn,
                              cross_attention_frequency=1, encoder_hidden_size=encoder_width,
                              layer_norm_eps=dims.qformer_layer_norm_eps)


def lora_config(dims: SalmonnDims):
    from peft import LoraConfig, TaskType

    return LoraConfig(task_type=TaskType.CAUSAL_LM, inference_mode=True, r=dims.lora_rank,
                      lora_alpha=dims.lora_alpha, lora_dropout=dims.lora_dropout,
                      target_modules=list(dims.lora_targets))


class SalmonnModel(nn.Module):
    """All of SALMONN in one module; `llm` is the peft-wrapped Vicuna (its state-dict keys are
    `llm.base_model.model.…`, the release's `llama_model.base_model.model.…`)."""

    def __init__(self, speech_encoder: nn.Module, beats: nn.Module, llm: nn.Module, dims: SalmonnDims) -> None:
        super().__init__()
        from transformers import Blip2QFormerModel

        self.dims = dims
        self.speech_encoder, self.beats, self.llm = speech_encoder, beats, llm
        whisper_dim = speech_encoder.config.d_model
        beats_dim = beats.config.encoder_embed_dim
        self.n_frames = speech_encoder.config.max_source_positions
        self.ln_speech = nn.LayerNorm(whisper_dim)
        self.ln_audio = nn.LayerNorm(beats_dim)
        self.speech_qformer = Blip2QFormerModel(qformer_config(dims, whisper_dim + beats_dim))
        self.speech_query_tokens = nn.Parameter(torch.zeros(1, dims.num_query_tokens, dims.qformer_hidden))
        self.speech_llama_proj = nn.Linear(dims.qformer_hidden, self.llm_config.hidden_size)

    @property
    def llm_config(self) -> Any:
        return self.llm.get_base_model().config

    @property
    def causal_lm(self) -> nn.Module:
        """The LlamaForCausalLM with the LoRA layers injected (generate and forward go through it)."""
        return self.llm.get_base_model()

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.causal_lm.get_input_embeddings()(ids)

    def fuse(self, whisper_states: torch.Tensor, beats_states: list[torch.Tensor]) -> torch.Tensor:
        """(B, T, Dw) Whisper states and B BEATs outputs (1, N_i, Db) -> (B, T, Dw + Db), each BEATs
        stream normalised, then zero-padded to T (the release pads after `ln_audio`)."""
        speech = self.ln_speech(whisper_states)
        audio = []
        for states in beats_states:
            states = self.ln_audio(states)
            if states.size(1) > speech.size(1):
                raise ValueError(f"BEATs gave {states.size(1)} frames for a {speech.size(1)}-frame Whisper input")
            audio.append(F.pad(states, (0, 0, 0, speech.size(1) - states.size(1))))
        return torch.cat([speech, torch.cat(audio).to(speech.dtype)], dim=-1)

    def windows_per_clip(self) -> tuple[int, int]:
        """(frames per window, windows per clip): (17, 88) for the release."""
        kernel, _, count = window_geometry(self.n_frames, self.dims.second_per_window, self.dims.second_stride)
        return kernel, count

    def windows(self, fused: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B * L, kernel, C): the release's unfold, windows in time order per sample."""
        batch, _, channels = fused.shape
        kernel, stride, _ = window_geometry(self.n_frames, self.dims.second_per_window, self.dims.second_stride)
        unfolded = F.unfold(fused.transpose(1, 2).unsqueeze(2), kernel_size=(1, kernel), stride=(1, stride))
        count = unfolded.shape[-1]
        return unfolded.view(batch, channels, kernel, count).permute(0, 3, 2, 1).reshape(-1, kernel, channels)

    def speech_tokens(self, whisper_states: torch.Tensor, beats_states: list[torch.Tensor]) -> torch.Tensor:
        """(B, L, LLM width): one projected Q-Former query output per window."""
        fused = self.fuse(whisper_states, beats_states)
        batch = fused.shape[0]
        windows = self.windows(fused)
        queries = self.speech_query_tokens.expand(windows.shape[0], -1, -1)
        mask = torch.ones(windows.shape[:-1], dtype=torch.long, device=windows.device)
        out = self.speech_qformer(query_embeds=queries, encoder_hidden_states=windows,
                                  encoder_attention_mask=mask).last_hidden_state
        projected = self.speech_llama_proj(out)
        return projected.reshape(batch, -1, projected.shape[-1])
