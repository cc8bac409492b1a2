"""Task and model registries: a new task or model is one new file with a decorator.

Discovery imports every module of `wavllm_eval.tasks` and `wavllm_eval.model_zoo` (plus the
`wavllm_eval.plugins` entry points of outside packages), so there is no list to edit. Those modules
import in milliseconds: torch and transformers are imported inside `load` only, and modules whose
name starts with `_` (an adapter's network and checkpoint code) are not imported by discovery.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, TypeVar

from wavllm_eval.errors import InputError

if TYPE_CHECKING:
    from wavllm_eval.adapter import ModelAdapter
    from wavllm_eval.task import Task

T = TypeVar("T")

PLUGIN_PACKAGES = ("wavllm_eval.tasks", "wavllm_eval.model_zoo")
ENTRY_POINT_GROUP = "wavllm_eval.plugins"


@dataclass(frozen=True)
class TaskEntry:
    id: str
    group: str
    cls: type
    summary: str


@dataclass(frozen=True)
class ModelEntry:
    id: str
    cls: type
    summary: str


_TASKS: dict[str, TaskEntry] = {}
_MODELS: dict[str, ModelEntry] = {}
_discovered = False


def register_task(*task_ids: str, group: str) -> Callable[[type[T]], type[T]]:
    """Register a task class under one or more ids (test-clean and test-other share a class)."""

    def decorate(cls: type[T]) -> type[T]:
        for task_id in task_ids:
            _check_new(task_id, _TASKS, cls)
            _TASKS[task_id] = TaskEntry(task_id, group, cls, _summary(cls))
        cls.group = group  # type: ignore[attr-defined]
        return cls

    return decorate


def register_model(model_id: str) -> Callable[[type[T]], type[T]]:
    """Register a model adapter class under `model_id`."""

    def decorate(cls: type[T]) -> type[T]:
        _check_new(model_id, _MODELS, cls)
        _MODELS[model_id] = ModelEntry(model_id, cls, _summary(cls))
        cls.id = model_id  # type: ignore[attr-defined]
        return cls

    return decorate


def discover() -> None:
    """Import every plugin module once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for package_name in PLUGIN_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__, prefix=f"{package_name}."):
            if info.name.rsplit(".", 1)[-1].startswith("_"):
                continue  # private helpers (big nets, checkpoint code) load with their adapter, not here
            importlib.import_module(info.name)
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        entry_point.load()


def task_entries() -> dict[str, TaskEntry]:
    discover()
    return dict(_TASKS)


def model_entries() -> dict[str, ModelEntry]:
    discover()
    return dict(_MODELS)


def groups() -> dict[str, list[str]]:
    """Group name -> its task ids, in registration order."""
    out: dict[str, list[str]] = {}
    for entry in task_entries().values():
        out.setdefault(entry.group, []).append(entry.id)
    return out


def expand_task_ids(spec: str | list[str], prompt_variants: int = 1) -> list[str]:
    """`"asr,ii-task"` -> task ids; groups and `all` expand, order kept, duplicates dropped.
    `prompt_variants` N adds `<task>@p2 .. @pN` after each task (as many as the task ships)."""
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    if not names:
        raise InputError(None, "no task given", "pass --tasks, e.g. --tasks asr (see `wavllm-eval list`)")
    tasks, task_groups = task_entries(), groups()
    out: list[str] = []
    for name in names:
        base, variant = _split(name)
        if name == "all":
            expanded = list(tasks)
        elif name in tasks:
            expanded = [name]
        elif base in tasks and variant > 1:
            make_task(name)  # checks the variant exists
            expanded = [name]
        elif name in task_groups:
            expanded = task_groups[name]
        else:
            raise InputError(None, f"unknown task or group {name!r}", _did_you_mean(name, [*tasks, *task_groups, "all"]))
        for task_id in expanded:
            with_variants = [task_id]
            if prompt_variants > 1 and _split(task_id)[1] == 1:
                available = tasks[task_id].cls.n_variants()
                with_variants += [f"{task_id}@p{k}" for k in range(2, min(prompt_variants, available) + 1)]
            out.extend(t for t in with_variants if t not in out)
    return out


def make_task(task_id: str) -> Task:
    """The task object of an id; `<id>@pK` is the task under its K-th instruction variant."""
    entries = task_entries()
    base, _ = _split(task_id)
    if base not in entries:
        raise InputError(None, f"unknown task {task_id!r}", _did_you_mean(base, list(entries)))
    return entries[base].cls(task_id)


def _split(task_id: str) -> tuple[str, int]:
    from wavllm_eval.task import split_task_id

    return split_task_id(task_id)


def model_class(model_id: str) -> type[ModelAdapter]:
    entries = model_entries()
    if model_id not in entries:
        raise InputError(None, f"unknown model {model_id!r}", _did_you_mean(model_id, list(entries)))
    return entries[model_id].cls


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    if close:
        return f"did you mean {close[0]!r}? (`wavllm-eval list` shows all)"
    return "run `wavllm-eval list` to see the known ids"


def _check_new(key: str, table: dict, cls: type) -> None:
    existing = table.get(key)
    if existing is not None and existing.cls is not cls:
        raise ValueError(f"id {key!r} is registered twice: {existing.cls.__qualname__} and {cls.__qualname__}")


def _summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else cls.__name__
