"""Tiny random Qwen2-Audio (base, Instruct) and Qwen2.5-Omni folders in the released hub layouts.

The tokenizer is a byte-level BPE trained here (offline.md §4.1) with the Qwen special tokens, so the
placeholders are single tokens; its vocabulary size is asserted, as a wrongly built transformers 5.x
tokenizer can be silently empty. Encoders keep the Whisper geometry (128 mels, 1500 positions: the
processors always pad to 3000 frames); everything else is a few dozen dimensions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

VOCAB_SIZE = 400
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
                  "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>", "<|en|>")
CORPUS = (
    "Based on the attached audio, generate a comprehensive text transcription of the spoken content.",
    "Translate the audio clip into German. Detect the language and recognize the speech:",
    "Can you describe the emotional condition of the speaker in the provided audio clip?",
    "Is there only one speaker in the audio clip? Yes No neutral happy angry sad A B C",
    "You are a helpful assistant. You are Qwen, a virtual human developed by the Qwen Team.",
    "system user assistant Audio 1: 2: What will the man do next? Recognize the emotion with keywords.",
)


def build_tokenizer():
    """A Qwen2-style byte-level BPE (TokenizersBackend) of exactly VOCAB_SIZE entries."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(list(CORPUS) * 4, trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        audio_token="<|AUDIO|>", audio_bos_token="<|audio_bos|>", audio_eos_token="<|audio_eos|>")
    assert len(tokenizer) == VOCAB_SIZE, len(tokenizer)
    assert tokenizer("<|audio_bos|><|AUDIO|><|audio_eos|>")["input_ids"] == [
        SPECIAL_TOKENS.index(t) for t in ("<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>")]
    return tokenizer


def _text_config(cls, tokenizer, **extra):
    return cls(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id, **extra)


def build_qwen2_audio(root: Path, instruct: bool = True) -> Path:
    import torch
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioEncoderConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        Qwen2Config,
        WhisperFeatureExtractor,
    )
    from wavllm_eval.model_zoo.qwen2_audio import INSTRUCT_CHAT_TEMPLATE

    out = Path(root) / ("qwen2-audio-instruct" if instruct else "qwen2-audio")
    tokenizer = build_tokenizer()
    processor = Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tokenizer,
                                    chat_template=INSTRUCT_CHAT_TEMPLATE if instruct else None)
    config = Qwen2AudioConfig(
        audio_config=Qwen2AudioEncoderConfig(num_mel_bins=128, d_model=64, encoder_layers=2, encoder_attention_heads=2,
                                             encoder_ffn_dim=128, max_source_positions=1500),
        text_config=_text_config(Qwen2Config, tokenizer), audio_token_index=processor.audio_token_id)
    torch.manual_seed(0 if instruct else 1)
    Qwen2AudioForConditionalGeneration(config).eval().save_pretrained(out)
    processor.save_pretrained(out)
    processor.feature_extractor.save_pretrained(out)  # preprocessor_config.json, as on the hub
    return out


def thinker_config(tokenizer):
    from transformers import Qwen2_5OmniThinkerConfig
    from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import (
        Qwen2_5OmniAudioEncoderConfig,
        Qwen2_5OmniTextConfig,
        Qwen2_5OmniVisionEncoderConfig,
    )

    vocab = tokenizer.get_vocab()
    return Qwen2_5OmniThinkerConfig(
        audio_config=Qwen2_5OmniAudioEncoderConfig(d_model=64, encoder_layers=2, encoder_attention_heads=2,
                                                   encoder_ffn_dim=128, output_dim=64),
        vision_config=Qwen2_5OmniVisionEncoderConfig(depth=1, hidden_size=32, intermediate_size=32, num_heads=2,
                                                     out_hidden_size=64, fullatt_block_indexes=[0]),
        text_config=_text_config(Qwen2_5OmniTextConfig, tokenizer, rope_parameters={
            "rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]}),
        audio_token_index=vocab["<|AUDIO|>"], image_token_index=vocab["<|IMAGE|>"],
        video_token_index=vocab["<|VIDEO|>"], audio_start_token_id=vocab["<|audio_bos|>"],
        audio_end_token_id=vocab["<|audio_eos|>"], vision_start_token_id=vocab["<|vision_bos|>"],
        vision_end_token_id=vocab["<|vision_eos|>"])  # the released thinker_config carries both


def released_thinker_keys(state_dict: dict) -> dict:
    """transformers 5.x thinker names -> the released checkpoint's `thinker.*` names."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("model.language_model."):
            out["thinker.model." + key[len("model.language_model."):]] = value
        elif key.startswith("model."):
            out["thinker." + key[len("model."):]] = value
        else:
            out["thinker." + key] = value
    return out


def build_qwen2_5_omni(root: Path) -> Path:
    """The full-model layout of Qwen/Qwen2.5-Omni-7B: a qwen2_5_omni config around the thinker,
    `thinker.*` safetensors keys plus a talker tensor the adapter must ignore, chat_template.json,
    and a tokenizer whose own chat template is a decoy (the processor's file must win)."""
    import torch
    from safetensors.torch import save_file
    from transformers import (
        Qwen2_5OmniConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
        WhisperFeatureExtractor,
    )
    from wavllm_eval.model_zoo.qwen2_5_omni import CHAT_TEMPLATE

    out = Path(root) / "qwen2.5-omni"
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}DECOY{{ m['role'] }}{% endfor %}"
    tokenizer.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=128).save_pretrained(out)
    (out / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2))
    thinker = thinker_config(tokenizer)
    Qwen2_5OmniConfig(thinker_config=thinker.to_dict()).save_pretrained(out)
    torch.manual_seed(2)
    model = Qwen2_5OmniThinkerForConditionalGeneration(thinker).eval()
    tensors = {k: v.clone().contiguous() for k, v in released_thinker_keys(model.state_dict()).items()}
    tensors["talker.codec_head.weight"] = torch.zeros(4, 4)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    torch.save(model.state_dict(), out / "reference_state_dict.pt")  # for the tests' load check
    return out


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "qwen2-audio": lambda root: build_qwen2_audio(root, instruct=False),
    "qwen2-audio-instruct": lambda root: build_qwen2_audio(root, instruct=True),
    "qwen2.5-omni": build_qwen2_5_omni,
}
