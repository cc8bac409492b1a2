"""Full-size WavLLM architecture, random weights, on LibriSpeech-like durations (issue 14, item 11).

Whisper-large-v2 encoder + WavLM-base + LLaMA-2-7B with the released adapter sizes, weights drawn
at random directly on the device (no 30 GB checkpoint needed), greedy decoding of short answers
through the harness's own adapter (`wavllm-greedy`: features, both encoders, prompt-aware LoRA,
left-padded batched generate). Prints one table row per batch size: device, batch, RTFx (audio
seconds per model second), generated tokens/s, mean time to first token, peak CUDA memory, and
how many outputs equal batch size 1's. Target: RTFx >= 150 for greedy short answers.

    python benchmarks/bench_gpu.py                               # on a GPU: bf16, batches 1,8,16,32
    python benchmarks/bench_gpu.py --write                       # ... and put the table in RESULTS.md
    python benchmarks/bench_gpu.py --tiny --device cpu --dtype float32 --clips 4 --batches 1,2   # smoke run

Random weights never emit EOS, so every answer is exactly --max-new-tokens long (32: a LibriSpeech
transcript's typical length in LLaMA tokens is 20-40).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.bench_performance import ASR_PROMPT, TOKENIZER, cut_clips, librispeech_durations  # noqa: E402

SECTION = "## GPU, full-size WavLLM architecture (random weights)"


def write_folder(root: Path, tiny: bool) -> Path:
    """Configs of the released architecture (or the tests' tiny one) in the layout `--model-path` reads."""
    from transformers import (
        LlamaConfig,
        Wav2Vec2FeatureExtractor,
        WavLMConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
    )

    if tiny:
        from tests.wavllm_tiny import build_tiny_wavllm

        return build_tiny_wavllm(root, TOKENIZER)[0]
    root.mkdir(parents=True, exist_ok=True)
    # openai/whisper-large-v2's encoder; microsoft/wavlm-base; LLaMA-2-7B-chat (eps pinned to 1e-6 by the loader)
    WhisperConfig(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                  decoder_layers=32, decoder_attention_heads=20, decoder_ffn_dim=5120, num_mel_bins=80,
                  max_source_positions=1500, vocab_size=51865).save_pretrained(root / "whisper")
    WhisperFeatureExtractor(feature_size=80).save_pretrained(root / "whisper")
    WavLMConfig().save_pretrained(root / "wavlm")  # the base model's defaults: 768 wide, 12 layers
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=False,
                             return_attention_mask=True).save_pretrained(root / "wavlm")
    LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=32, rms_norm_eps=1e-6, max_position_embeddings=4096,
                tie_word_embeddings=False).save_pretrained(root / "llama")
    (root / "wavllm.json").write_text(json.dumps({}))  # the released adapter sizes are the defaults
    shutil.copy(TOKENIZER, root / "tokenizer.model")
    return root


def random_model(folder: Path, device: str, dtype, attention: str):
    """The WavLLM module with every parameter drawn on `device` (matrices N(0, 0.02), vectors 1, biases
    0): the parameters are created there, so 7.5 B of them never pass through host memory."""
    import torch
    from wavllm_eval.model_zoo.wavllm import build_model

    model = build_model(folder, empty=True, attention=attention)
    generator = torch.Generator(device=device).manual_seed(0)
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            data = torch.empty(param.shape, device=device, dtype=torch.float32)
            if name == "bias":
                data.zero_()
            elif param.dim() == 1:  # norm gains, the WavLM layer weights: 1, as initialised
                data.fill_(1.0)
            else:
                data.normal_(0, 0.02, generator=generator)
            module._parameters[name] = torch.nn.Parameter(data.to(dtype), requires_grad=False)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None:
                module._buffers[name] = buffer.to(device)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--attn", default="eager", choices=("eager", "sdpa", "flash_attention_2"))
    parser.add_argument("--batches", default="1,8,16,32")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny sizes (a smoke run on the CPU)")
    parser.add_argument("--write", action="store_true", help="put the table in benchmarks/RESULTS.md")
    args = parser.parse_args()
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor
    from wavllm_eval.model_zoo.wavllm import WavLLMGreedyAdapter, load_tokenizer

    from wavllm_eval.adapter import LoadOptions, set_fp32_precision
    from wavllm_eval.types import Prompt

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; nothing measured (run it where a GPU is, or pass --device cpu --tiny)")
        return
    set_fp32_precision(False)
    dtype = getattr(torch, args.dtype)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        folder = write_folder(Path(tmp) / "wavllm", args.tiny)
        started = time.perf_counter()
        model = random_model(folder, args.device, dtype, args.attn)
        build_s = time.perf_counter() - started
        options = LoadOptions(device=args.device, dtype=args.dtype, max_new_tokens=args.max_new_tokens, attn=args.attn)
        adapter = WavLLMGreedyAdapter(model, load_tokenizer(folder / "tokenizer.model", 32000),
                                      WhisperFeatureExtractor.from_pretrained(folder / "whisper"),
                                      Wav2Vec2FeatureExtractor.from_pretrained(folder / "wavlm"), folder,
                                      args.device, dtype, options)
        durations = np.sort(librispeech_durations(args.clips, seed=11, low=1.3, high=30.0))[::-1]
        prompts = [Prompt(f"utt{i}", ASR_PROMPT, (), waveforms=(c,))
                   for i, c in enumerate(cut_clips(durations, seed=11))]
        # features ahead, as the runner's prefetch workers compute them: the model time below is the model's
        prompts = [Prompt(p.sample_id, p.text, (), waveforms=p.waveforms, prepared=adapter.prepare_audio(p))
                   for p in prompts]
        params = sum(p.numel() for p in model.parameters())
        device_name = torch.cuda.get_device_name() if cuda else "cpu"
        print(f"{device_name}: {params / 1e6:,.1f} M parameters in {args.dtype}, built in {build_s:.1f} s; "
              f"{len(prompts)} clips, {durations.sum():.0f} audio-s (median {np.median(durations):.1f} s)", flush=True)
        adapter.generate(prompts[:2], [0, 0])  # warm-up (kernels, allocator)
        reference = [g.text for p in prompts[:4] for g in adapter.generate([p], [0])]  # batch size 1
        rows = []
        for batch in [int(b) for b in args.batches.split(",")]:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            outputs, tokens, ttft = [], 0, []
            started = time.perf_counter()
            for k in range(0, len(prompts), batch):
                generations = adapter.generate(prompts[k:k + batch], [0] * len(prompts[k:k + batch]))
                outputs += [g.text for g in generations]
                tokens += sum(g.n_new_tokens for g in generations)
                ttft += [generations[0].first_token_s] if generations[0].first_token_s is not None else []
            if cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            same = sum(a == b for a, b in zip(outputs[:len(reference)], reference, strict=True))
            peak = (f"{torch.cuda.max_memory_allocated() / 2**30:.1f} / {torch.cuda.max_memory_reserved() / 2**30:.1f}"
                    if cuda else "—")
            row = (f"| {device_name} | {args.dtype}, {args.attn} | {batch} | {durations.sum() / seconds:.1f} | "
                   f"{tokens / seconds:.1f} | {np.mean(ttft):.3f} | {peak} | {same}/{len(reference)} |")
            print(row, flush=True)
            rows.append(row)
    if args.write and not args.tiny:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        table = "\n".join([
            SECTION, "", f"{stamp} · `python benchmarks/bench_gpu.py {' '.join(sys.argv[1:])}` · {len(prompts)} "
            f"LibriSpeech-like clips ({durations.sum():.0f} audio-s), greedy, {args.max_new_tokens} new tokens each, "
            "features computed ahead (as the runner's prefetch does). Target: RTFx >= 150.", "",
            "| device | dtype, attention | batch | RTFx | tokens/s | TTFT s | peak GiB alloc / reserved | = batch 1 |",
            "|---|---|---|---|---|---|---|---|", *rows, ""])
        path = ROOT / "benchmarks" / "RESULTS.md"
        text = path.read_text(encoding="utf-8")
        if SECTION in text:
            head, _, rest = text.partition(SECTION)
            cut = rest.find("\n## ")
            text = head + table + ("\n" + rest[cut + 1:] if cut >= 0 else "")
        else:
            text = text.rstrip("\n") + "\n\n" + table
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
