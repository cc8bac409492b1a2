"""WavLLM (Hu et al., 2024) on transformers parts: Whisper + WavLM streams, fusion, LLaMA-2 with
prompt-aware LoRA. Follows microsoft/SpeechT5 WavLLM/wavllm at 5d66cf5 (see shared reference
wavllm.md §2 and §10); imported only by the adapter's `load` (torch at module level).

Faithfulness notes, each from the official code:
- Whisper runs on 30 s padded log-mel chunks (the mask only sets the truncation length); chunks of
  longer audio are encoded, truncated to the longest chunk's length and concatenated in time.
- WavLM: softmax-weighted sum of all hidden states (embedding output + every layer), whole waveform.
- Each stream: Conv1d(k3,s2)+GLU twice, bottleneck adapter `LN(up(gelu(down x))) + x`, projector;
  streams cut to the shorter length, concatenated [whisper ‖ wavlm], then a fusion Linear.
- LoRA on q, k, v, o; its delta is multiplied by a per-sample, per-output-channel prompt scale
  (alpha/r is not applied), computed by the base LLM (LoRA off) from '"' + prompt + '"'.
- The LLM here is Hugging Face LLaMA (rotate-half RoPE): q/k rows, q/k LoRA-B rows and the q/k part
  of the prompt scale are permuted from Meta's interleaved layout on conversion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class WavLLMDims:
    """The sizes the official code hard-codes (values for the released model), as config fields."""

    whisper_dim: int = 1280
    whisper_sub_mid: int = 1280
    wavlm_dim: int = 768
    wavlm_sub_mid: int = 512
    adapter_dim: int = 1024
    adapter_bottleneck: int = 512
    projector_dim: int = 2048  # per stream; the LLM dim is 2 * projector_dim
    llm_dim: int = 4096
    prompt_hidden: int = 1024
    lora_r: int = 32
    lora_alpha: int = 32
    n_heads: int = 32

    def to_json(self) -> dict:
        return asdict(self)


def meta_to_hf_rows(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Permute output rows from Meta's interleaved RoPE pairs to HF's rotate-half halves
    (transformers' convert_llama_weights_to_hf); works for (out, in) matrices and (out,) vectors."""
    out = weight.shape[0]
    rest = weight.shape[1:]
    return weight.reshape(n_heads, out // n_heads // 2, 2, *rest).transpose(1, 2).reshape(out, *rest)


class Conv1dSubsampler(nn.Module):
    """fairseq's Conv1dSubsampler: Conv1d(k3, s2, p1) + GLU(dim=1), twice; 4x shorter in time."""

    def __init__(self, in_dim: int, mid_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList([
            nn.Conv1d(in_dim, mid_dim, 3, stride=2, padding=1),
            nn.Conv1d(mid_dim // 2, out_dim * 2, 3, stride=2, padding=1),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T/4, out)
        x = x.transpose(1, 2)
        for conv in self.conv_layers:
            x = F.glu(conv(x), dim=1)
        return x.transpose(1, 2)


class BottleneckAdapter(nn.Module):
    """`LayerNorm(up(gelu(down(x)))) + x`: the norm is on the branch, the residual added after."""

    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__()
        self.down_layer = nn.Linear(dim, bottleneck)
        self.up_layer = nn.Linear(bottleneck, dim)
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.up_layer(F.gelu(self.down_layer(x)))) + x


class StreamHead(nn.Module):
    """Subsampler, adapter and projector of one speech stream."""

    def __init__(self, in_dim: int, mid_dim: int, dims: WavLLMDims) -> None:
        super().__init__()
        self.subsample = Conv1dSubsampler(in_dim, mid_dim, dims.adapter_dim)
        self.adapter = BottleneckAdapter(dims.adapter_dim, dims.adapter_bottleneck)
        self.projector = nn.Linear(dims.adapter_dim, dims.projector_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.adapter(self.subsample(x)))


class LoRAScale:
    """The prompt scale shared by every LoRA layer of the model for the current forward pass.

    `value` is (batch, out) in Meta channel order, or None with LoRA off (the prompt pass)."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None


class PromptScaledLoRALinear(nn.Module):
    """A frozen Linear plus a LoRA delta scaled per sample and per output channel by the prompt scale.

    peft scales a LoRA delta by one scalar alpha/r; WavLLM scales it by a vector that depends on the
    sample's instruction, hence this small module instead of a patched peft layer."""

    def __init__(self, base: nn.Linear, r: int, scale: LoRAScale, channel_order: torch.Tensor | None) -> None:
        super().__init__()
        self.base = base
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        self.scale = scale
        # q and k live in HF's rotate-half order: index the Meta-order scale with the same permutation
        self.register_buffer("channel_order", channel_order, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        scale = self.scale.value
        if scale is None:
            return out
        if self.channel_order is not None:
            scale = scale[:, self.channel_order]
        return out + self.lora_B(self.lora_A(x)) * scale[:, None, :].to(out.dtype)


class WavLLMModel(nn.Module):
    """The whole network. `llama` is a transformers LlamaForCausalLM whose attention projections are
    PromptScaledLoRALinear; `whisper` a WhisperEncoder; `wavlm` a WavLMModel."""

    def __init__(self, whisper: nn.Module, wavlm: nn.Module, llama: nn.Module, dims: WavLLMDims) -> None:
        super().__init__()
        self.dims = dims
        self.whisper = whisper
        self.wavlm = wavlm
        self.llama = llama
        self.whisper_head = StreamHead(dims.whisper_dim, dims.whisper_sub_mid, dims)
        self.wavlm_head = StreamHead(dims.wavlm_dim, dims.wavlm_sub_mid, dims)
        n_states = wavlm.config.num_hidden_layers + 1
        self.wavlm_output_weights = nn.Parameter(torch.ones(n_states))
        self.fusion = nn.Linear(2 * dims.projector_dim, dims.llm_dim)
        self.audio_proj = nn.Linear(dims.projector_dim, dims.llm_dim)  # in the checkpoint, unused at inference
        self.scale_fc_1 = nn.Linear(dims.llm_dim, dims.prompt_hidden)
        self.scale_fc_2 = nn.Linear(dims.prompt_hidden, dims.llm_dim)
        self.scale_weight_attention = nn.Linear(dims.llm_dim, 1)
        self.lora_scale = LoRAScale()
        self._install_lora()

    def _install_lora(self) -> None:
        head_order = meta_to_hf_rows(torch.arange(self.dims.llm_dim), self.dims.n_heads)
        for layer in self.llama.model.layers:
            attention = layer.self_attn
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                order = head_order if name in ("q_proj", "k_proj") else None
                setattr(attention, name, PromptScaledLoRALinear(getattr(attention, name), self.dims.lora_r,
                                                                self.lora_scale, order))

    # --- speech ----------------------------------------------------------------------------------
    def whisper_stream(self, hidden: torch.Tensor, chunk_mel_lengths: Sequence[int]) -> torch.Tensor:
        """One clip's Whisper encoder output, (n_chunks, 1500, dim) -> (1, n_chunks * T, projector_dim):
        each chunk truncated to the longest chunk's output length, adapted, then concatenated in time."""
        keep = max((n - 1) // 2 + 1 for n in chunk_mel_lengths)
        projected = self.whisper_head(hidden[:, :keep])
        return projected.reshape(1, -1, projected.shape[-1])

    def encode_wavlm(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        states = self.wavlm(input_values, attention_mask=attention_mask, output_hidden_states=True).hidden_states
        weights = torch.softmax(self.wavlm_output_weights, dim=0)
        mixed = sum(w * h for w, h in zip(weights, states, strict=True))
        return self.wavlm_head(mixed)

    def fuse(self, whisper_stream: torch.Tensor, wavlm_stream: torch.Tensor) -> torch.Tensor:
        length = min(whisper_stream.shape[1], wavlm_stream.shape[1])
        return self.fusion(torch.cat([whisper_stream[:, :length], wavlm_stream[:, :length]], dim=-1))

    # --- prompt-aware LoRA --------------------------------------------------------------------------
    def prompt_scale(self, prompt_ids: list[int]) -> torch.Tensor:
        """(1, llm_dim) scale in Meta channel order, from the base LLM (LoRA off) on '"' + prompt + '"'."""
        captured: list[torch.Tensor] = []
        hook = self.llama.model.layers[-1].register_forward_hook(
            lambda module, args, output: captured.append(output[0] if isinstance(output, tuple) else output))
        saved, self.lora_scale.value = self.lora_scale.value, None
        try:
            ids = torch.tensor([prompt_ids], device=self.fusion.weight.device)
            self.llama.model(input_ids=ids, use_cache=False)
        finally:
            hook.remove()
            self.lora_scale.value = saved
        hidden = captured[0]  # last decoder layer output, before the final RMSNorm
        projected = self.scale_fc_2(F.gelu(self.scale_fc_1(hidden)))
        attention = torch.softmax(self.scale_weight_attention(projected), dim=1)
        return torch.clamp(F.relu((attention * projected).sum(dim=1)), max=3.0)
