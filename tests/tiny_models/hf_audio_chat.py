"""Tiny random transformers-native speech LLMs for `hf-audio-chat` and its family aliases.

Each folder is what `save_pretrained` writes for the released model: config.json (real model_type
and architectures), weights, the family's processor (feature extractor + tokenizer) and its chat
template. The tokenizer is a byte-level BPE trained here (no download) with the family's special
tokens as single tokens; its size is checked, since a mis-built tokenizer in transformers 5.x can be
silently empty. Model sizes are tiny; the feature extractors keep the released settings except
Audio Flamingo 3's window, shortened to 2 s (with the encoder's positions to match) for speed.

The chat templates behave as the released ones (transformers' conversion scripts for
nvidia/audio-flamingo-3-hf and Qwen/Qwen3-ASR-*-hf write them; tests/test_hf_audio_chat.py checks
the renderings against the strings of transformers' own processor tests); they are written here, not
copied. The generation configs carry the released decoding entries.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

VOCAB_SIZE = 320
CORPUS = ["You are a helpful assistant. Transcribe the input speech. What is it? Is the speaker happy? "
          "yes no language English the quick brown fox jumps over the lazy dog system user assistant"] * 20

# Audio Flamingo 3 (convert_audioflamingo3_to_hf.py's processor template): ChatML; the default system
# turn; in a user turn one `<sound>` (however many audio parts) followed by all its text parts joined.
AF3_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<sound>"]
AF3_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages if message['content'] is not none %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% set heard = namespace(audio=false, text='') %}"
    "{% for part in message['content'] %}"
    "{% if part.get('type') == 'audio' or 'audio' in part %}{% set heard.audio = true %}"
    "{% elif part.get('type') == 'text' or 'text' in part %}{% set heard.text = heard.text + part['text'] %}"
    "{% endif %}{% endfor %}"
    "{% if heard.audio %}<sound>{% endif %}{{ heard.text }}"
    "{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# the released generation_config.json samples (the adapter decodes greedily and records these)
AF3_GENERATION = dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.05)

# Qwen3-ASR (convert_qwen3_asr_to_hf.py's ASR template): ChatML; a system turn that is always there,
# holding the system messages' text (empty by default); a user turn of audio markers only, one per
# audio part (user text is not rendered); earlier assistant turns verbatim.
Q3_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_start|>", "<|audio_end|>",
              "<|audio_pad|>"]
Q3_PLAIN = ["<asr_text>"]  # one token, but kept by decode(skip_special_tokens=True): the answer's marker
Q3_TEMPLATE = (
    "{% set acc = namespace(system='', audio='') %}"
    "{% for message in messages %}{% if message['content'] is string %}"
    "{% if message['role'] == 'system' %}{% set acc.system = acc.system + message['content'] %}{% endif %}"
    "{% else %}{% for part in message['content'] %}"
    "{% if message['role'] == 'system' and part['type'] == 'text' %}"
    "{% set acc.system = acc.system + part['text'] %}"
    "{% elif part['type'] == 'audio' or 'audio' in part or 'audio_url' in part %}"
    "{% set acc.audio = acc.audio + '<|audio_start|><|audio_pad|><|audio_end|>' %}{% endif %}"
    "{% endfor %}{% endif %}{% endfor %}"
    "<|im_start|>system\n{{ acc.system }}<|im_end|>\n<|im_start|>user\n{{ acc.audio }}<|im_end|>\n"
    "{% for message in messages if message['role'] == 'assistant' %}<|im_start|>assistant\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def bpe_tokenizer(special: list[str], named: dict[str, str] | None = None, plain: tuple[str, ...] = (),
                  eos: str = "<|im_end|>"):
    """A byte-level BPE (the Qwen2 tokenizer's kind) trained on a small corpus: `special` and `plain`
    are single tokens, only `special` is dropped by decode(skip_special_tokens=True)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE - len(plain), special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token="<|endoftext|>",
                                   extra_special_tokens=named or {})
    fast.add_tokens([s for s in special if s not in fast.all_special_tokens], special_tokens=True)
    fast.add_tokens(list(plain), special_tokens=False)
    if len(fast) != VOCAB_SIZE:
        raise AssertionError(f"tiny tokenizer has {len(fast)} tokens, built {VOCAB_SIZE}")
    return fast


def text_config(vocab_size: int, **extra) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, **extra)


def build_audio_flamingo_3(root: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        AudioFlamingo3Config,
        AudioFlamingo3ForConditionalGeneration,
        AudioFlamingo3Processor,
        GenerationConfig,
        WhisperFeatureExtractor,
    )

    folder = Path(root) / "audio-flamingo-3"
    tokenizer = bpe_tokenizer(AF3_SPECIAL)
    # 128 mels as released; a 2 s window (released: 30 s) with max_source_positions 100 (released: 1500)
    features = WhisperFeatureExtractor(feature_size=128, chunk_length=2)
    processor = AudioFlamingo3Processor(feature_extractor=features, tokenizer=tokenizer,
                                        chat_template=AF3_TEMPLATE)
    config = AudioFlamingo3Config(
        audio_config=dict(num_mel_bins=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          hidden_size=32, max_source_positions=100),
        text_config=text_config(len(tokenizer)), audio_token_id=tokenizer.convert_tokens_to_ids("<sound>"))
    torch.manual_seed(seed)
    model = AudioFlamingo3ForConditionalGeneration(config).eval()
    end, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model.generation_config = GenerationConfig(eos_token_id=[end, pad], pad_token_id=pad, **AF3_GENERATION)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_qwen3_asr(root: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        GenerationConfig,
        Qwen3ASRConfig,
        Qwen3ASRFeatureExtractor,
        Qwen3ASRForConditionalGeneration,
        Qwen3ASRProcessor,
    )

    folder = Path(root) / "qwen3-asr"
    named = {"audio_token": "<|audio_pad|>", "audio_bos_token": "<|audio_start|>",
             "audio_eos_token": "<|audio_end|>"}
    tokenizer = bpe_tokenizer(Q3_SPECIAL, named, plain=tuple(Q3_PLAIN))
    processor = Qwen3ASRProcessor(feature_extractor=Qwen3ASRFeatureExtractor(), tokenizer=tokenizer,
                                  chat_template=Q3_TEMPLATE)
    end, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen3ASRConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                          d_model=32, output_dim=64, downsample_hidden_size=16),
        text_config=text_config(len(tokenizer), head_dim=16),
        audio_token_id=tokenizer.convert_tokens_to_ids("<|audio_pad|>"), pad_token_id=end,
        eos_token_id=[pad, end])
    torch.manual_seed(seed)
    model = Qwen3ASRForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=[pad, end], pad_token_id=end, do_sample=False,
                                               max_new_tokens=512)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# GLM-ASR has no table row and no alias: it runs the generic path. Its hub chat template was not
# available offline, so this stand-in follows the prompt layout of zai-org/GLM-ASR inference.py
# (`<|user|>` audio `<|user|>` text `<|assistant|>`); it tests the adapter, not GLM-ASR's template.
GLM_SPECIAL = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|begin_of_audio|>", "<|end_of_audio|>",
               "<|pad|>"]
GLM_STANDIN_TEMPLATE = (
    "{% for message in messages %}{% if message['content'] is string %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{% else %}"
    "{% for part in message['content'] if part['type'] == 'audio' %}"
    "<|{{ message['role'] }}|>\n<|begin_of_audio|><|pad|><|end_of_audio|>{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}"
    "<|{{ message['role'] }}|>\n{{ part['text'] }}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_glm_asr_standin(root: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        GlmAsrConfig,
        GlmAsrForConditionalGeneration,
        GlmAsrProcessor,
        WhisperFeatureExtractor,
    )

    folder = Path(root) / "glm-asr-standin"
    tokenizer = bpe_tokenizer(GLM_SPECIAL, eos="<|endoftext|>")
    processor = GlmAsrProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128, chunk_length=2),
                                tokenizer=tokenizer, chat_template=GLM_STANDIN_TEMPLATE)
    config = GlmAsrConfig(
        audio_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                          max_position_embeddings=100, num_mel_bins=128),
        text_config=text_config(len(tokenizer)), audio_token_id=tokenizer.convert_tokens_to_ids("<|pad|>"))
    torch.manual_seed(seed)
    GlmAsrForConditionalGeneration(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "hf-audio-chat": build_audio_flamingo_3,
    "audio-flamingo-3": build_audio_flamingo_3,
    "qwen3-asr": build_qwen3_asr,
}
