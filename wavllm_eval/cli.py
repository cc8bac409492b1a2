"""`wavllm-eval` commands (CONTRACT.md). Flags become a frozen request; the work happens elsewhere.

Exit codes: 0 success; 1 a gate failed; 2 a usage or input error, printed as one line naming the
file and the fix.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from wavllm_eval.console import console, setup_logging, stdout
from wavllm_eval.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Evaluate speech LLMs on the WavLLM paper's suite, on equal terms.")

EXIT_OK, EXIT_GATE_FAILED, EXIT_INPUT_ERROR = 0, 1, 2


@app.command("list")
def list_command(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Tasks, task groups and models, one line each."""
    from wavllm_eval import registry

    tasks, models, groups = registry.task_entries(), registry.model_entries(), registry.groups()
    if as_json:
        stdout.print_json(json.dumps({
            "tasks": [{"id": t.id, "group": t.group, "summary": t.summary} for t in tasks.values()],
            "groups": groups,
            "models": [{"id": m.id, "summary": m.summary} for m in models.values()],
        }))
        return
    for t in tasks.values():
        stdout.print(f"task   {t.id:<26} group {t.group:<8} {t.summary}", markup=False, highlight=False, soft_wrap=True)
    for name, ids in groups.items():
        stdout.print(f"group  {name:<26} {', '.join(ids)}", markup=False, highlight=False, soft_wrap=True)
    stdout.print(f"group  {'all':<26} every task", markup=False, highlight=False, soft_wrap=True)
    for m in models.values():
        stdout.print(f"model  {m.id:<26} {m.summary}", markup=False, highlight=False, soft_wrap=True)


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
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16, float16")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="run seed; each sample's seed derives from it and its id")] = 1,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="skip samples already written")] = True,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show progress bars")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run MODEL on TASKS and write OUT/<model>/results.json and samples/<task>.jsonl."""
    setup_logging(verbose)
    from wavllm_eval.evaluate import EvaluationRequest, evaluate
    from wavllm_eval.registry import expand_task_ids
    from wavllm_eval.runner import RunOptions
    from wavllm_eval.summary import results_table

    if limit is not None and limit < 1:
        raise InputError("--limit", f"must be at least 1, got {limit}", "omit it to run every sample")
    options = RunOptions(batch_size=_parse_batch_size(batch_size), batch_audio_s=batch_audio_s, limit=limit,
                         seed=seed, resume=resume, device=device, dtype=dtype,
                         show_progress=progress and sys.stderr.isatty())
    request = EvaluationRequest(
        task_ids=expand_task_ids(tasks), model_id=model, output_dir=output_dir, data_dir=data_dir,
        data_overrides=_parse_data_overrides(data or []), model_path=model_path, options=options,
    )
    outcome = evaluate(request)
    shown = {t: outcome.results["tasks"][t] for t in request.task_ids}
    stdout.print(results_table(model, shown))
    console.print(f"results: {outcome.results_path}", highlight=False)


@app.command()
def score(
    task: Annotated[str, typer.Option("--task", help="task id whose scorer to apply")],
    predictions: Annotated[Path, typer.Option("--predictions", help="a samples/<task>.jsonl file")],
    as_json: Annotated[bool, typer.Option("--json", help="print the task's results.json entry")] = False,
) -> None:
    """Re-score stored predictions with no model (after a normaliser or parser change)."""
    from wavllm_eval.registry import make_task
    from wavllm_eval.store import read_records
    from wavllm_eval.summary import results_table

    task_obj = make_task(task)
    records = read_records(predictions)
    if not records:
        raise InputError(predictions, "holds no sample records", "point at a samples/<task>.jsonl written by `run`")
    entry = task_obj.score(records).to_json()
    if as_json:
        stdout.print_json(json.dumps({task: entry}))
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

    paths = write_report(run_dirs, output_dir, [f.strip() for f in formats.split(",") if f.strip()], reported)
    for path in paths:
        stdout.print(str(path), highlight=False, soft_wrap=True)


@app.command()
def gate(
    baseline: Annotated[Path, typer.Option("--baseline", help="the reference run folder (OUT/<model>)")],
    candidate: Annotated[Path, typer.Option("--candidate", help="the run folder to check")],
    max_regression: Annotated[list[str] | None, typer.Option(
        "--max-regression", help="METRIC=POINTS, e.g. wer=0.3 (repeatable; overrides --config)")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="a wavllm-gate.toml with thresholds")] = None,
) -> None:
    """Exit 1 when a headline metric regresses beyond its threshold and the paired test calls it
    significant, or when the candidate scored fewer samples; 0 otherwise."""
    from rich.markup import escape
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
        if not sep:
            raise InputError("--max-regression", f"expected METRIC=POINTS, got {item!r}", "e.g. --max-regression wer=0.3")
    outcome = run_gate(load_run(baseline), load_run(candidate), GateConfig.from_file(config, overrides))
    table = Table(title=escape(f"gate: {candidate} vs {baseline}"), title_justify="left")
    for column in ("task", "metric", "baseline", "candidate", "Δ", "p", "threshold", "verdict", "reason"):
        table.add_column(column)
    for check in outcome.checks:
        c = check.comparison
        table.add_row(escape(check.task), escape(check.metric), f"{c.baseline:.2f}" if c else "—", f"{c.candidate:.2f}" if c else "—",
                      f"{c.delta:+.2f}" if c else "—", f"{c.p_value:.4f}" if c else "—",
                      f"{check.threshold:g}" if c else "—",
                      "[green]pass[/green]" if check.verdict == "pass" else "[bold red]FAIL[/bold red]", escape(check.reason))
    stdout.print(table)
    if not outcome.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


@app.command()
def convert(
    model: Annotated[str, typer.Option("--model", help="model id; today: wavllm")],
    model_path: Annotated[Path, typer.Option("--model-path", help="folder with the released checkpoint")],
    output_dir: Annotated[Path, typer.Option("--output-dir", help="the converted folder to write")],
) -> None:
    """Convert a released checkpoint once (e.g. WavLLM final.pt -> model.safetensors) so runs load it directly."""
    if model not in ("wavllm", "wavllm-greedy"):
        raise InputError("--model", f"no converter for {model!r}", "only wavllm checkpoints need converting")
    from wavllm_eval.model_zoo._wavllm_checkpoint import convert_checkpoint

    stdout.print(str(convert_checkpoint(model_path, output_dir)), highlight=False)


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
    """Console entry point: one line and exit 2 for input errors, never a traceback for them."""
    try:
        code = app(args=argv, standalone_mode=False)  # typer.Exit(n) comes back as the return value
    except InputError as exc:
        console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, markup=True, soft_wrap=True)
        return EXIT_INPUT_ERROR
    except SystemExit as exc:  # typer's own exits (e.g. gate's exit 1)
        return int(exc.code or 0)
    except typer.Abort:
        return 130
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return EXIT_INPUT_ERROR
        raise
    return code if isinstance(code, int) else EXIT_OK


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
