"""PocketSphinx, the offline real-ASR baseline, through the whole pipeline (the Foundation's 'done when')."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import jiwer
import pytest

from tests.librispeech_tree import build_tree
from wavllm_eval.cli import main
from wavllm_eval.text import whisper_english

REAL_ID = "1089-134686-0000"
REAL_TEXT = ("HE HOPED THERE WOULD BE STEW FOR DINNER TURNIPS AND CARROTS AND BRUISED POTATOES AND FAT MUTTON "
             "PIECES TO BE LADLED OUT IN THICK PEPPERED FLOUR FATTENED SAUCE")


def audioeval_english() -> list[tuple[Path, str]]:
    """Real English speech clips shipped by the pytest-audioeval wheel (MIT), with references."""
    spec = importlib.util.find_spec("pytest_audioeval")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("pytest-audioeval is a test dependency: pip install -e '.[test]'")
    folder = Path(next(iter(spec.submodule_search_locations))) / "samples" / "audio" / "en"
    return [(wav, wav.with_suffix(".txt").read_text(encoding="utf-8").strip()) for wav in sorted(folder.glob("*.wav"))]


@pytest.fixture(scope="module")
def real_speech_corpus(tmp_path_factory) -> Path:
    """A LibriSpeech-layout tree of real speech: the LibriSpeech clip bundled with the package and
    pytest-audioeval's English clips (converted to FLAC as LibriSpeech ships)."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("real")
    build_tree(root, sentences={f"7000-1-{i:04d}": text.upper() for i, (_, text) in enumerate(audioeval_english())})
    for i, (wav, _) in enumerate(audioeval_english()):
        audio, rate = sf.read(str(wav), dtype="float32")
        sf.write(str(root / f"LibriSpeech/test-clean/7000/1/7000-1-{i:04d}.flac"), audio, rate, format="FLAC")
    chapter = root / "LibriSpeech/test-clean/1089/134686"
    chapter.mkdir(parents=True)
    shutil.copy(Path(__file__).parents[1] / "wavllm_eval/demo_data" / f"{REAL_ID}.flac", chapter / f"{REAL_ID}.flac")
    (chapter / "1089-134686.trans.txt").write_text(f"{REAL_ID} {REAL_TEXT}\n")
    return root


@pytest.mark.slow
def test_end_to_end_run_matches_an_independent_wer(real_speech_corpus, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["run", "--tasks", "librispeech-test-clean", "--model", "pocketsphinx", "--data-dir",
            str(real_speech_corpus), "--output-dir", str(out), "--no-progress"]
    assert main(argv) == 0
    results = json.loads((out / "pocketsphinx/results.json").read_text())
    lines = [json.loads(x) for x in (out / "pocketsphinx/samples/librispeech-test-clean.jsonl").read_text().splitlines()]
    entry = results["tasks"]["librispeech-test-clean"]
    assert entry["n_total"] == entry["n_scored"] == len(lines) == 4  # every utterance once
    assert sorted(x["id"] for x in lines) == sorted({x["id"] for x in lines})

    # the WER an independent jiwer + Whisper-normaliser computation gives on the same predictions
    normalise = whisper_english()
    expected = 100 * jiwer.wer([normalise(x["reference"]) for x in lines], [normalise(x["prediction"]) for x in lines])
    assert entry["metrics"]["wer"] == pytest.approx(expected, abs=1e-6)
    assert entry["metrics"]["wer"] < 50  # real speech: genuine recognition, not noise

    # a second run makes no model calls (the model is not even loaded) and scores the same
    from wavllm_eval import evaluate as evaluate_module

    loads = []
    original = evaluate_module.model_class

    def counting_model_class(model_id):
        cls = original(model_id)
        loads.append(model_id)
        return cls

    evaluate_module.model_class = counting_model_class
    try:
        assert main(argv) == 0
    finally:
        evaluate_module.model_class = original
    again = json.loads((out / "pocketsphinx/results.json").read_text())
    assert again["tasks"] == results["tasks"]
    assert (out / "pocketsphinx/samples/librispeech-test-clean.jsonl").read_text().count("\n") == 4

    # `score` agrees
    capsys.readouterr()
    assert main(["score", "--task", "librispeech-test-clean", "--predictions",
                 str(out / "pocketsphinx/samples/librispeech-test-clean.jsonl"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["librispeech-test-clean"]["metrics"] == entry["metrics"]


def test_shared_librispeech_clip_is_recognised(shared_data):
    from wavllm_eval.model_zoo.pocketsphinx import PocketSphinxAdapter

    from wavllm_eval.audio import load_audio
    from wavllm_eval.types import AudioRef, Prompt

    adapter = PocketSphinxAdapter.load()
    audio = load_audio(AudioRef(shared_data / "audio" / "asr.flac"))
    text = adapter.generate([Prompt("0", "", (), waveforms=(audio,))], [1])[0].text
    assert jiwer.wer(REAL_TEXT.lower(), text) < 0.5
    assert text == adapter.generate([Prompt("0", "", (), waveforms=(audio,))], [2])[0].text  # deterministic
