"""BEATs (Chen et al., 2022), the audio-event encoder SALMONN runs beside Whisper.

Written for this project after the published architecture as released in microsoft/unilm `beats/`
(`BEATs.py`, `backbone.py`), which bytedance/SALMONN vendors as `models/beats/`. The module and
parameter names are the release's, so `BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt`'s `model`
state dict loads with a strict key check:

    patch_embedding.weight                       Conv2d(1, embed_dim, 16x16, stride 16) on the fbank
    layer_norm.*, post_extract_proj.*            LayerNorm(embed_dim), Linear(embed_dim -> encoder dim)
    encoder.pos_conv.0.{weight_g,weight_v,bias}  weight-normed Conv1d (dim=2), then SamePad and GELU
    encoder.layer_norm.*                         applied after the positional conv (post-LN model)
    encoder.layers.N.self_attn.{q,k,v,out}_proj.*, .grep_linear.*, .grep_a, .relative_attention_bias.weight
    encoder.layers.N.{self_attn_layer_norm,fc1,fc2,final_layer_norm}.*
    predictor.*                                  the AudioSet classifier (fine-tuned models; unused here)

Every layer's `relative_attention_bias` is the one module of layer 0 (shared, as in the release),
so the key appears once per layer. Inference only: no dropout, no layer drop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from wavllm_eval.model_zoo._kaldi_fbank import fbank

FBANK_MEAN = 15.41663
FBANK_STD = 6.55582
ATTENTION_ALPHA = 32.0
# cfg fields with no effect at inference (dropouts, layer drop, the gradient-decay trick)
TRAINING_ONLY = frozenset({"dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop", "dropout_input",
                           "layer_wise_gradient_decay_ratio", "predictor_dropout"})  # the release's logit stabiliser: q / 32, max-subtracted, times 32


@dataclass(frozen=True)
class BEATsConfig:
    """The fields of the release's `BEATsConfig` that shape the network (the checkpoint's `cfg`
    holds them all; unknown keys such as dropouts are ignored at inference)."""

    input_patch_size: int = 16
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    deep_norm: bool = True
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = True
    finetuned_model: bool = True
    predictor_class: int = 527

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> BEATsConfig:
        """The checkpoint's cfg; a key that is neither a field nor training-only is an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - names - TRAINING_ONLY)
        if unknown:
            raise ValueError(f"BEATs cfg keys not understood: {unknown}")
        return cls(**{k: v for k, v in cfg.items() if k in names})


class WeightNormConv1d(nn.Module):
    """Conv1d with `torch.nn.utils.weight_norm(..., dim=2)` parameters (`weight_g`, `weight_v`), the
    layout the release's checkpoint stores: weight = g * v / ||v||, the norm over dims 0 and 1."""

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel_size))
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.padding, self.groups = kernel_size // 2, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.weight_v
        weight = self.weight_g * v / v.norm(dim=(0, 1), keepdim=True)
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class SamePad(nn.Module):
    """Drops the last frame after an even-kernel conv, so the output keeps the input's length."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, : -self.remove] if self.remove else x


def relative_position_bucket(relative: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5-style bidirectional buckets: half for each direction, exact below num_buckets/4, log-spaced
    up to max_distance (the release's `_relative_positions_bucket`)."""
    half = num_buckets // 2
    buckets = (relative > 0).to(torch.long) * half
    distance = relative.abs()
    max_exact = half // 2
    large = max_exact + (torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
                         * (half - max_exact)).to(torch.long)
    large = torch.clamp(large, max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class BEATsAttention(nn.Module):
    """Self-attention with the gated relative position bias (WavLM's gate, `grep_linear`/`grep_a`)."""

    def __init__(self, config: BEATsConfig, has_bias_table: bool) -> None:
        super().__init__()
        dim, self.heads = config.encoder_embed_dim, config.encoder_attention_heads
        self.head_dim = dim // self.heads
        self.scaling = self.head_dim ** -0.5
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.num_buckets, self.max_distance = config.num_buckets, config.max_distance
        self.gru_rel_pos = config.gru_rel_pos
        if has_bias_table:
            self.relative_attention_bias = nn.Embedding(config.num_buckets, self.heads)
        if self.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, self.heads, 1, 1))

    def position_bias(self, length: int) -> torch.Tensor:
        """(heads, L, L): the bias table at bucket(key position - query position)."""
        positions = torch.arange(length, device=self.relative_attention_bias.weight.device)
        buckets = relative_position_bucket(positions[None, :] - positions[:, None], self.num_buckets,
                                           self.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None,
                bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, L, D); padding_mask: (B, L), True at padding; bias: (heads, L, L) or None."""
        batch, length, dim = x.shape
        if bias is None and hasattr(self, "relative_attention_bias"):
            bias = self.position_bias(length)
        split = lambda t: t.view(batch, length, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        raw_q = split(self.q_proj(x))
        k, v = split(self.k_proj(x)), split(self.v_proj(x))
        q = raw_q * self.scaling / ATTENTION_ALPHA
        scores = q @ k.transpose(-1, -2)
        scores = (scores - scores.amax(dim=-1, keepdim=True)) * ATTENTION_ALPHA
        if padding_mask is not None:
            scores = scores.masked_fill(padding_mask[:, None, None, :], float("-inf"))
        if bias is not None:
            gated = bias[None]
            if self.gru_rel_pos:
                gate_a, gate_b = torch.sigmoid(
                    self.grep_linear(raw_q).view(batch, self.heads, length, 2, 4).sum(-1)).chunk(2, dim=-1)
                gated = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * bias[None]
            scores = scores + gated
        attention = torch.softmax(scores, dim=-1) @ v
        return self.out_proj(attention.transpose(1, 2).reshape(batch, length, dim)), bias


class BEATsLayer(nn.Module):
    """Post-LN transformer layer with deep-norm residual scaling alpha = (2 * layers) ** 0.25."""

    def __init__(self, config: BEATsConfig, has_bias_table: bool) -> None:
        super().__init__()
        dim = config.encoder_embed_dim
        self.self_attn = BEATsAttention(config, has_bias_table)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, config.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = config.layer_norm_first
        self.alpha = math.pow(2 * config.encoder_layers, 0.25) if config.deep_norm else 1.0
        if config.activation_fn != "gelu":
            raise ValueError(f"BEATs activation {config.activation_fn!r} is not implemented (the release uses gelu)")

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x).float()).type_as(x))

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None,
                bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.layer_norm_first:
            attended, bias = self.self_attn(self.self_attn_layer_norm(x), padding_mask, bias)
            x = x + attended
            return x + self.ffn(self.final_layer_norm(x)), bias
        attended, bias = self.self_attn(x, padding_mask, bias)
        x = self.self_attn_layer_norm(x * self.alpha + attended)
        return self.final_layer_norm(x * self.alpha + self.ffn(x)), bias


class BEATsEncoder(nn.Module):
    def __init__(self, config: BEATsConfig) -> None:
        super().__init__()
        dim = config.encoder_embed_dim
        self.pos_conv = nn.Sequential(WeightNormConv1d(dim, config.conv_pos, config.conv_pos_groups),
                                      SamePad(config.conv_pos), nn.GELU())
        self.layers = nn.ModuleList(
            BEATsLayer(config, has_bias_table=config.relative_position_embedding) for _ in range(config.encoder_layers))
        if config.relative_position_embedding:
            shared = self.layers[0].self_attn.relative_attention_bias
            for layer in self.layers[1:]:
                layer.self_attn.relative_attention_bias = shared
        self.layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = config.layer_norm_first

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        bias = None
        for layer in self.layers:
            x, bias = layer(x, padding_mask, bias)  # layer 0 computes the bias; the rest reuse it, gated
        return self.layer_norm(x) if self.layer_norm_first else x


class BEATs(nn.Module):
    """fbank -> 16x16 patches (time-major, 8 frequency patches per 160 ms) -> transformer -> (B, N, D)."""

    def __init__(self, config: BEATsConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embedding = nn.Conv2d(1, config.embed_dim, kernel_size=config.input_patch_size,
                                         stride=config.input_patch_size, bias=config.conv_bias)
        self.layer_norm = nn.LayerNorm(config.embed_dim)
        self.post_extract_proj = (nn.Linear(config.embed_dim, config.encoder_embed_dim)
                                  if config.embed_dim != config.encoder_embed_dim else None)
        self.encoder = BEATsEncoder(config)
        self.predictor = nn.Linear(config.encoder_embed_dim, config.predictor_class) if config.finetuned_model else None

    @staticmethod
    def preprocess(waveforms: torch.Tensor) -> torch.Tensor:
        """(B, n) in [-1, 1] -> (B, T, 128) normalised fbank, as the release's `preprocess`; always in
        float32 with autocast off (the power spectrum of a 2**15-scaled signal overflows float16)."""
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            banks = torch.stack([fbank(wave.float() * 2 ** 15) for wave in waveforms])
        return (banks - FBANK_MEAN) / (2 * FBANK_STD)

    @staticmethod
    def downsample_padding_mask(features: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """The release's `forward_padding_mask`: trim to a multiple of the feature length, then a
        position is padding when all the samples folded onto it are."""
        extra = padding_mask.size(1) % features.size(1)
        if extra > 0:
            padding_mask = padding_mask[:, :-extra]
        return padding_mask.view(padding_mask.size(0), features.size(1), -1).all(-1)

    def forward(self, waveforms: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.extract_features(waveforms, padding_mask)

    def extract_features(self, waveforms: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, n) 16 kHz waveforms -> (B, N, encoder_embed_dim), N = (T_fbank // 16) * 8."""
        banks = self.preprocess(waveforms).to(self.patch_embedding.weight.dtype)
        if padding_mask is not None:
            padding_mask = self.downsample_padding_mask(banks, padding_mask)
        features = self.patch_embedding(banks.unsqueeze(1))
        features = features.reshape(features.shape[0], features.shape[1], -1).transpose(1, 2)
        features = self.layer_norm(features)
        if padding_mask is not None:
            padding_mask = self.downsample_padding_mask(features, padding_mask)
        if self.post_extract_proj is not None:
            features = self.post_extract_proj(features)
        return self.encoder(features, padding_mask)
