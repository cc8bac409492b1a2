"""`wavllm-eval` commands (CONTRACT.md). Flags become a frozen request; the work happens elsewhere.

Exit codes: 0 success; 1 a gate failed; 2 a usage or input error, printed as one line naming the
file and the fix.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from wavllm_eval.console import console, setup_logging, stdout
from wavllm_eval.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Evaluate speech LLMs on the WavLLM paper's suite, on equal terms.")

EXIT_OK, EXIT_GATE_FAILED, EXIT_INPUT_ERROR, EXIT_RUN_INCOMPLETE = 0, 1, 2, 3


@app.command("list")
def list_command(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Tasks (with the data layout each reads), task groups and models (with the files each needs)."""
    from wavllm_eval import registry

    tasks, models, groups = registry.task_entries(), registry.model_entries(), registry.groups()
    layouts = {t: registry.make_task(t).describe_layout() for t in tasks}
    variants = {t: e.cls.n_variants() for t, e in tasks.items()}
    if as_json:
        stdout.print_json(json.dumps({
            "tasks": [{"id": t.id, "group": t.group, "summary": t.summary, "data": layouts[t.id],
                       "instruction_variants": variants[t.id]} for t in tasks.values()],
            "groups": groups,
            "models": [{"id": m.id, "summary": m.summary, "requires": list(m.cls.required_files)}
                       for m in models.values()],
        }))
        return

    def line(text: str) -> None:
        stdout.print(text, markup=False, highlight=False, soft_wrap=True)

    for t in tasks.values():  # one line each (the contract): the data layout closes the task's line
        line(f"task   {t.id:<26} group {t.group:<8} {t.summary} · data: {layouts[t.id]}")
    for name, ids in groups.items():
        line(f"group  {name:<26} {', '.join(ids)}")
    line(f"group  {'all':<26} every task")
    for m in models.values():
        requires = ", ".join(m.cls.required_files) or "nothing (no --model-path needed)"
        line(f"model  {m.id:<26} {m.summary} · --model-path holds: {requires}")


@app.command()
def run(
    tasks: Annotated[str, typer.Option("--tasks", help="task ids or groups, comma-separated (asr,ii-task; all)")],
    model: Annotated[str, typer.Option("--model", help="model id (see `wavllm-eval list`)")],
    output_dir: Annotated[Path, typer.Option("--output-dir", help="results go to OUT/<model>/")],
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="folder holding the datasets in their released layout")] = None,
    data: Annotated[list[str] | None, typer.Option("--data", help="TASK=PATH: a task's data folder or WavLLM TSV manifest")] = None,
    model_path: Annotated[Path | None, typer.Option("--model-path", help="checkpoint folder or file")] = None,
    batch_size: Annotated[str, typer.Option("--batch-size", help="auto, or samples per batch")] = "auto",
    batch_audio_s: Annotated[float | None, typer.Option("--batch-audio-s", help="audio seconds per batch")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="only the first N samples of each task")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16, float16, int8")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="run seed; each sample's seed derives from it and its id")] = 1,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="skip samples already written")] = True,
    attn: Annotated[str, typer.Option(
        "--attn", help="attention kernel: auto (the model's faithful default), eager, sdpa, flash_attention_2")] = "auto",
    tf32: Annotated[bool, typer.Option(
        "--tf32/--no-tf32", help="TF32 matmuls and convolutions for fp32 weights on CUDA (default: full fp32)")] = False,
    max_new_tokens: Annotated[int | None, typer.Option(
        "--max-new-tokens", help="cap on generated tokens per answer (a quick look; recorded in the configuration)")] = None,
    prompt_variants: Annotated[int, typer.Option(
        "--prompt-variants", help="run each task under N instructions of its shipped paraphrase list (task@p2..)")] = 1,
    judge: Annotated[str | None, typer.Option("--judge", help="a local Hugging Face causal LM folder used as judge")] = None,
    max_failed: Annotated[float | None, typer.Option(
        "--max-failed", help="exit 3 when a task's failed fraction exceeds this (0..1)")] = None,
    check_batch_invariance: Annotated[int, typer.Option(
        "--check-batch-invariance", help="rerun K samples per task at batch size 1 and report outputs that differ")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print results.json on stdout instead of the table")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show progress bars")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run MODEL on TASKS and write OUT/<model>/results.json and samples/<task>.jsonl.

    Exit 0 when every task scored; 3 when a task scored no sample or failed more than --max-failed."""
    setup_logging(verbose)
    from wavllm_eval.evaluate import EvaluationRequest, evaluate
    from wavllm_eval.registry import expand_task_ids, model_class
    from wavllm_eval.runner import RunOptions
    from wavllm_eval.summary import results_table

    _check_run_options(limit, device, dtype, max_new_tokens, prompt_variants, max_failed, batch_audio_s, attn,
                       check_batch_invariance)
    adapter_cls = model_class(model)  # an unknown model is an error before any data is read
    if model_path is not None and not model_path.exists():
        raise InputError(model_path, "--model-path does not exist", "pass the folder that holds the model files")
    missing = adapter_cls.missing_files(model_path) if model_path is not None else []
    if missing:  # every missing file at once, before torch is imported or any data read
        raise InputError(model_path, f"{model} needs {', '.join(missing)} here",
                         f"--model-path must hold {', '.join(adapter_cls.required_files)}")
    options = RunOptions(batch_size=_parse_batch_size(batch_size), batch_audio_s=batch_audio_s, limit=limit,
                         seed=seed, resume=resume, device=device, dtype=dtype, max_new_tokens=max_new_tokens,
                         check_batch_invariance=check_batch_invariance, attn=attn, tf32=tf32,
                         show_progress=progress and sys.stderr.isatty())
    task_ids = expand_task_ids(tasks, prompt_variants)
    explicit = [t.strip() for t in tasks.split(",") if t.strip() and _is_task_id(t.strip())]
    named = set(expand_task_ids(explicit, prompt_variants)) if explicit else set()
    overrides = _parse_data_overrides(data or [])
    # a task given its own --data is named too: a typo in that path is an error, not a skipped task
    from wavllm_eval.task import split_task_id

    given_data = {split_task_id(t)[0] for t in overrides}
    named |= {t for t in task_ids if split_task_id(t)[0] in given_data}
    request = EvaluationRequest(
        task_ids=task_ids, model_id=model, output_dir=output_dir, data_dir=data_dir,
        data_overrides=overrides, model_path=model_path, options=options,
        optional_task_ids=frozenset(t for t in task_ids if t not in named), judge=judge,
    )
    outcome = evaluate(request)
    if not outcome.results:  # a data-parallel rank other than 0: rank 0 merges, scores and reports
        return
    for task_id, why in outcome.skipped_tasks.items():
        console.print(f"skipped {task_id}: {why}", highlight=False, markup=False)
    shown = {t: outcome.results["tasks"][t] for t in outcome.runs}
    if as_json:
        stdout.print_json(json.dumps(outcome.results, allow_nan=False))
    else:
        stdout.print(results_table(model, shown))
    code = EXIT_OK
    for task_id, entry in shown.items():
        total, scored, failed = entry["n_total"], entry["n_scored"], entry["n_failed"]
        console.print(f"{task_id}: {scored}/{total} scored, {failed} failed, {entry['n_skipped']} skipped",
                      highlight=False, markup=False)
        if scored == 0 or (max_failed is not None and total and failed / total > max_failed):
            code = EXIT_RUN_INCOMPLETE
        check = entry.get("batch_invariance")
        if check:
            parts = [str(d.get("first_difference", "?")) for d in check.get("differing", [])]
            where = f" (they part at character {', '.join(parts)})" if parts else ""
            console.print(f"{task_id}: batch invariance: {check['n_differing']} of {check['checked']} outputs differ "
                          f"at batch size 1{where}", highlight=False, markup=False)
    console.print(f"results: {outcome.results_path}", highlight=False)
    if code != EXIT_OK:
        console.print("error: a task scored no sample or failed more than --max-failed (exit 3)", highlight=False,
                      markup=False)
        raise typer.Exit(code)


def _is_task_id(name: str) -> bool:
    from wavllm_eval.registry import task_entries
    from wavllm_eval.task import split_task_id

    return split_task_id(name)[0] in task_entries()


def _check_run_options(limit, device, dtype, max_new_tokens, prompt_variants, max_failed, batch_audio_s,
                       attn="auto", check_batch_invariance=0) -> None:
    """Options are checked before anything loads (no torch import, no data read)."""
    from wavllm_eval.adapter import ATTENTION, DTYPES

    if attn not in ATTENTION:
        raise InputError("--attn", f"unknown attention kernel {attn!r}", f"use one of {', '.join(ATTENTION)}")
    if limit is not None and limit < 1:
        raise InputError("--limit", f"must be at least 1, got {limit}", "omit it to run every sample")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        raise InputError("--device", f"unknown device {device!r}", "use auto, cpu, cuda or cuda:N")
    if dtype not in DTYPES:
        raise InputError("--dtype", f"unknown dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise InputError("--max-new-tokens", f"must be at least 1, got {max_new_tokens}", "omit it for the model's own limit")
    if prompt_variants < 1:
        raise InputError("--prompt-variants", f"must be at least 1, got {prompt_variants}", "e.g. --prompt-variants 3")
    if max_failed is not None and not 0 <= max_failed <= 1:
        raise InputError("--max-failed", f"is a fraction between 0 and 1, got {max_failed}", "e.g. --max-failed 0.01")
    if batch_audio_s is not None and batch_audio_s <= 0:
        raise InputError("--batch-audio-s", f"must be positive, got {batch_audio_s}", "e.g. --batch-audio-s 240")
    if check_batch_invariance < 0:
        raise InputError("--check-batch-invariance", f"must be 0 or more, got {check_batch_invariance}",
                         "e.g. --check-batch-invariance 8 (samples per task rerun at batch size 1)")


@app.command()
def score(
    run_dir: Annotated[Path | None, typer.Argument(help="a run folder (OUT/<model>) to re-score in place")] = None,
    task: Annotated[str | None, typer.Option("--task", help="task id whose scorer to apply (with --predictions)")] = None,
    predictions: Annotated[Path | None, typer.Option("--predictions", help="a samples/<task>.jsonl file")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the results.json entries")] = False,
    judge: Annotated[str | None, typer.Option("--judge", help="the judge a RUN_DIR was scored with (its cached "
                                              "verdicts are reused)")] = None,
) -> None:
    """Re-score stored predictions with no model: one JSONL (--task, --predictions), or a whole run
    folder in place (results.json and the stored per-sample rows together)."""
    from wavllm_eval.summary import results_table

    if run_dir is not None:
        if task or predictions:
            raise InputError("score", "give either RUN_DIR or --task with --predictions, not both",
                             "wavllm-eval score OUT/<model>")
        from wavllm_eval.evaluate import rescore_run

        results = rescore_run(run_dir, judge=judge)
        if as_json:
            stdout.print_json(json.dumps(results["tasks"], allow_nan=False))
        else:
            stdout.print(results_table(results["model"]["id"], results["tasks"]))  # its shape checked
        return
    if not task or predictions is None:
        raise InputError("score", "needs RUN_DIR, or --task and --predictions",
                         "wavllm-eval score OUT/<model>, or score --task TASK --predictions FILE.jsonl")
    from wavllm_eval.registry import make_task
    from wavllm_eval.store import read_records

    task_obj = make_task(task)
    records = read_records(predictions)
    if not records:
        raise InputError(predictions, "holds no sample records", "point at a samples/<task>.jsonl written by `run`")
    entry = task_obj.score(records).result.to_json()
    if as_json:
        stdout.print_json(json.dumps({task: entry}, allow_nan=False))
    else:
        stdout.print(results_table(predictions.parent.parent.name or "predictions", {task: entry}))


@app.command()
def demo(
    output_dir: Annotated[Path, typer.Option("--output-dir", help="demo corpus and results go here")] = Path("demo-out"),
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Build the bundled demo corpus (real + espeak-ng speech) and score PocketSphinx on it, end to end."""
    setup_logging()
    from wavllm_eval.demo import build_demo_corpus
    from wavllm_eval.evaluate import EvaluationRequest, evaluate
    from wavllm_eval.runner import RunOptions
    from wavllm_eval.summary import results_table

    data_dir = build_demo_corpus(output_dir / "data")
    console.print(f"demo corpus: {data_dir / 'LibriSpeech' / 'test-clean'}", highlight=False)
    request = EvaluationRequest(
        task_ids=["librispeech-test-clean"], model_id="pocketsphinx", output_dir=output_dir / "runs",
        data_dir=data_dir, options=RunOptions(show_progress=progress and sys.stderr.isatty()),
    )
    outcome = evaluate(request)
    stdout.print(results_table("pocketsphinx", outcome.results["tasks"]))
    console.print(f"results: {outcome.results_path}", highlight=False)


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="run folders (OUT/<model>) or output folders (OUT)")],
    output_dir: Annotated[Path, typer.Option("--output-dir", help="where the report files go")],
    formats: Annotated[str, typer.Option("--format", help="comma-separated: md,csv,json,latex,html")] = "md,csv,json,latex,html",
    reported: Annotated[bool, typer.Option("--reported/--no-reported", help="show paper-reported rows")] = True,
) -> None:
    """Leaderboard tables (Markdown, CSV, JSON, LaTeX, HTML) with CIs, paper rows and paired significance."""
    from wavllm_eval.reports.report import write_report

    chosen = [f.strip() for f in formats.split(",") if f.strip()]
    if not chosen:
        raise InputError("--format", "names no format", "e.g. --format md,csv,json,latex,html")
    paths = write_report(run_dirs, output_dir, chosen, reported)
    for path in paths:
        stdout.print(str(path), highlight=False, soft_wrap=True)


@app.command()
def build(
    what: Annotated[str, typer.Argument(help="the set to build: ii-task")],
    source_kind: Annotated[str, typer.Option("--from", help="the corpus to build it from: librispeech")],
    source: Annotated[Path, typer.Argument(help="the corpus: a LibriSpeech split folder (or DATA holding LibriSpeech/test-clean)")],
    output_dir: Annotated[Path, typer.Option("--output-dir", help="where the manifest (official TSV format) goes")],
    seed: Annotated[int, typer.Option("--seed", help="fixed seed: the same seed gives the same manifest")] = 1,
) -> None:
    """Build a test set in the official WavLLM TSV format from a corpus you have (today: an II-task
    set from LibriSpeech, every sub-instruction with a checkable answer)."""
    if what != "ii-task":
        raise InputError("build", f"cannot build {what!r}", "wavllm-eval build ii-task --from librispeech DATA --output-dir OUT")
    if source_kind != "librispeech":
        raise InputError("--from", f"unknown corpus {source_kind!r}", "use --from librispeech")
    from wavllm_eval.ii_task_builder import build_ii_task, manifest_sha256

    split = source
    if not any(split.glob("*/*/*.trans.txt")):
        for candidate in (source / "LibriSpeech" / "test-clean", source / "test-clean"):
            if candidate.is_dir():
                split = candidate
                break
    manifest = build_ii_task(split, output_dir, seed)
    stdout.print(str(manifest), highlight=False, soft_wrap=True)
    console.print(f"sha256 {manifest_sha256(manifest)}", highlight=False)


def _gate_help() -> str:
    from wavllm_eval.reports.thresholds import DEFAULT_MAX_REGRESSION

    defaults = ", ".join(f"{k}={v:g}" for k, v in DEFAULT_MAX_REGRESSION.items())
    return ("Exit 1 when a headline metric (every one of a task's headlines) regresses beyond its threshold and "
            "the paired test calls it significant, or when the candidate scored fewer samples or another test "
            f"set; 0 otherwise. Built-in thresholds (metric units): {defaults}; other metrics 1.0; alpha 0.05. "
            "A --limit subset of the baseline is compared on the shared samples, with a note.")


@app.command(help=_gate_help())
def gate(
    baseline: Annotated[Path, typer.Option("--baseline", help="the reference run folder (OUT/<model>)")],
    candidate: Annotated[Path, typer.Option("--candidate", help="the run folder to check")],
    max_regression: Annotated[list[str] | None, typer.Option(
        "--max-regression", help="METRIC=POINTS, e.g. wer=0.3 (repeatable; overrides --config)")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="a wavllm-gate.toml with thresholds")] = None,
    variants: Annotated[str, typer.Option(
        "--variants", help="each: gate every prompt variant; mean: gate a task's mean across its variants")] = "each",
) -> None:
    from rich.table import Table

    from wavllm_eval.reports.gate import GateConfig, run_gate
    from wavllm_eval.reports.runs import load_run

    overrides: dict[str, float] = {}
    for item in max_regression or []:
        metric, sep, value = item.partition("=")
        try:
            overrides[metric] = float(value)
        except ValueError:
            sep = ""
        if not sep or not metric.strip():
            raise InputError("--max-regression", f"expected METRIC=POINTS, got {item!r}", "e.g. --max-regression wer=0.3")
    outcome = run_gate(load_run(baseline), load_run(candidate),
                       GateConfig.from_file(config, overrides).with_variants(variants))
    table = Table(title=escape(f"gate: {candidate} vs {baseline}"), title_justify="left")
    for column in ("task", "metric", "n", "baseline", "candidate", "Δ", "p", "threshold", "verdict", "reason"):
        table.add_column(column, justify="left" if column in ("task", "metric", "verdict", "reason") else "right")
    for check in outcome.checks:
        c = check.comparison
        table.add_row(escape(check.task), escape(check.metric), str(c.n_paired) if c else "—",
                      f"{c.baseline:.2f}" if c else "—", f"{c.candidate:.2f}" if c else "—",
                      f"{c.delta:+.2f}" if c else "—", f"{c.p_value:.4f}" if c else "—",
                      f"{check.threshold:g}" if c else "—",
                      "[green]pass[/green]" if check.verdict == "pass" else "[bold red]FAIL[/bold red]", escape(check.reason))
    stdout.print(table)
    for check in outcome.checks:
        for note in check.notes:
            console.print(f"note: {check.task} · {check.metric}: {note}", highlight=False, markup=False, soft_wrap=True)
    if not outcome.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


@app.command()
def convert(
    model: Annotated[str, typer.Option("--model", help="model id whose released checkpoint to convert")],
    model_path: Annotated[Path, typer.Option("--model-path", help="folder with the released checkpoint")],
    output_dir: Annotated[Path, typer.Option("--output-dir", help="the converted folder to write")],
    trust_pickle: Annotated[bool, typer.Option(
        "--trust-pickle", help="unpickle the checkpoint fully, code and all: only for a file you trust")] = False,
) -> None:
    """Convert a released checkpoint once (e.g. WavLLM final.pt -> model.safetensors) so runs load it directly.

    Checkpoints are read with a weights-only unpickler and an allow-list; one that needs anything else
    is refused unless --trust-pickle says the file is trusted (convert once, then run from safetensors)."""
    from wavllm_eval.adapter import convert_method
    from wavllm_eval.registry import model_class, model_entries

    converter = convert_method(model_class(model))
    if converter is None:
        with_converter = [m for m, e in model_entries().items() if convert_method(e.cls) is not None]
        raise InputError("--model", f"{model!r} loads its released files directly; there is nothing to convert",
                         f"models with a converter: {', '.join(with_converter) or 'none'}")
    import inspect

    kwargs = {"trusted": True} if trust_pickle else {}
    if trust_pickle and "trusted" not in inspect.signature(converter).parameters:
        raise InputError("--trust-pickle", f"the {model} converter reads no pickle", "drop --trust-pickle")
    stdout.print(str(converter(model_path, output_dir, **kwargs)), highlight=False)


def _parse_batch_size(value: str) -> int | None:
    if value == "auto":
        return None
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise InputError("--batch-size", f"expected auto or a positive integer, got {value!r}", "e.g. --batch-size 8")


def _parse_data_overrides(values: list[str]) -> dict[str, Path]:
    from wavllm_eval.registry import task_entries

    out: dict[str, Path] = {}
    known = task_entries()
    for value in values:
        task_id, sep, path = value.partition("=")
        if not sep or not path:
            raise InputError("--data", f"expected TASK=PATH, got {value!r}", "e.g. --data librispeech-test-clean=asr.tsv")
        if task_id not in known:
            from wavllm_eval.registry import make_task

            make_task(task_id)  # raises with a did-you-mean
        out[task_id] = Path(path)
    return out


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one line and exit 2 for usage and input errors, never a traceback for them."""
    try:
        code = app(args=argv, standalone_mode=False)  # typer.Exit(n) comes back as the return value
    except InputError as exc:
        _error_line(str(exc))
        return EXIT_INPUT_ERROR
    except SystemExit as exc:  # typer's own exits (e.g. gate's exit 1)
        return int(exc.code or 0)
    except _click_exceptions("Abort") as exc:
        del exc
        return 130
    except _click_exceptions("NoArgsIsHelpError"):
        _error_line("no command given — choose one of " + ", ".join(typer.main.get_command(app).commands)
                    + " (wavllm-eval --help)")
        return EXIT_INPUT_ERROR
    except _click_exceptions("ClickException") as exc:
        _error_line(_usage_message(exc))
        return EXIT_INPUT_ERROR
    except OSError as exc:  # a path the user gave that cannot be read or written (a file as --output-dir...)
        if exc.filename is None:
            raise
        _error_line(f"{exc.filename}: {exc.strerror or exc.__class__.__name__} — check the path given")
        return EXIT_INPUT_ERROR
    return code if isinstance(code, int) else EXIT_OK


def _click_exceptions(name: str) -> tuple[type[BaseException], ...]:
    """The click exception class `name` of every click in play: the installed click and the copy that
    typer >= 0.20 bundles as `typer._click` (whose classes do not subclass the installed ones)."""
    found: list[type[BaseException]] = []
    import importlib

    for module in ("click.exceptions", "typer._click.exceptions"):
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    return tuple(found)


def _usage_message(exc: BaseException) -> str:
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    context = getattr(exc, "ctx", None)
    command = getattr(context, "command_path", "wavllm-eval") if context is not None else "wavllm-eval"
    return f"{' '.join(message.split())} — see `{command} --help`"


def _error_line(text: str) -> None:
    console.print(f"[bold red]error:[/bold red] {escape(text)}", highlight=False, markup=True, soft_wrap=True)


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
