"""Users' own models: what a model factory receives, how one is declared, and how it is found.

A factory takes the run's :class:`DataDescription` (task, inputs, frame size, clip frames,
current rows) and returns an ``nn.Module`` called like FmFormer, ``model(video=..., current=...)``,
that returns class logits (B, classes) for task "cls" or mask logits (B, classes, H, W) for
"seg". Model authors declare one with :class:`ModelFactory` (the inputs it reads and its task)
and make it known either as an entry point in the group ``fmmodel.models`` of their package, or
by naming it on the command line: ``--model package.module:name`` or ``--model path/file.py:name``.
docs/custom-models.md walks through an example.

Checkpoints and run folders record where a model came from (:meth:`ModelSource.to_dict`). That
record is data: nothing in it chooses code to import. :func:`trusted_source` decides what a
recorded model may import: the factory the user names on the command line (``--model``), or the
entry point that an installed distribution declares under the recorded name; either must be the
recorded code, else the load is refused. A user's code that fails (on import, while building,
in a step) is named with its stage by :func:`user_code`.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from fmdata.errors import first_line
from fmmodel.errors import FmModelError
from fmmodel.protocol import MODALITIES, TASKS

ENTRY_POINT_GROUP = "fmmodel.models"
INPUTS = {"both": ("video", "current"), "video": ("video",), "current": ("current",)}


@dataclass(frozen=True)
class DataDescription:
    """What a model is fed in a run: a factory's only argument.

    ``frame_size`` is (rows, cols) of clip frames and masks as the model receives them (under the
    reference preprocessing frames arrive transposed, so rows are the image's width); clips are
    (B, 3, clip_frames, rows, cols), currents (B, current_rows, 3). ``options`` are the
    ``--model-opt KEY=VALUE`` pairs of the run.
    """

    task: str
    modality: str
    frame_size: tuple[int, int]
    clip_frames: int
    current_rows: int
    num_classes: int = 2
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame_size", tuple(int(s) for s in self.frame_size))
        if self.task not in TASKS:
            raise FmModelError(f"expected a task in {TASKS}, got {self.task!r}", field="task")
        if self.modality not in MODALITIES:
            raise FmModelError(f"expected a modality in {MODALITIES}, got {self.modality!r}", field="modality")

    @property
    def inputs(self) -> tuple[str, ...]:
        """The forward() arguments the model reads ("video", "current")."""
        return INPUTS[self.modality]

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (safe for JSON and weights-only checkpoints)."""
        d = asdict(self)
        d["frame_size"] = list(self.frame_size)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataDescription:
        """Inverse of :meth:`to_dict`."""
        return cls(task=str(d["task"]), modality=str(d["modality"]), frame_size=tuple(d["frame_size"]),
                   clip_frames=int(d["clip_frames"]), current_rows=int(d["current_rows"]),
                   num_classes=int(d.get("num_classes", 2)), options=dict(d.get("options", {})))


@dataclass(frozen=True)
class ModelFactory:
    """A user's model, declared: ``build(description) -> nn.Module`` for inputs of ``modality``
    ("both", "video" or "current") and ``task`` ("cls" or "seg"); None leaves them to the run
    (``--modality``, ``--task``). ``summary`` is one line for tables and help."""

    build: Callable[[DataDescription], nn.Module]
    modality: str | None = None
    task: str | None = None
    summary: str = ""

    def __post_init__(self) -> None:
        if self.modality not in (None, *MODALITIES) or self.task not in (None, *TASKS):
            raise FmModelError(f"expected a modality in {MODALITIES} and a task in {TASKS}, got "
                               f"{self.modality!r} and {self.task!r}")


@dataclass(frozen=True)
class ModelSource:
    """Where a user's model comes from: an entry point ``name`` of group fmmodel.models, or a
    ``spec`` ``package.module:attribute`` / ``path/file.py:attribute`` (files as absolute paths);
    ``version`` is the installed distribution's version when known."""

    name: str
    spec: str
    entry_point: bool = False
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain types only."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelSource:
        """Inverse of :meth:`to_dict`."""
        return cls(name=str(d["name"]), spec=str(d["spec"]), entry_point=bool(d.get("entry_point", False)),
                   version=d.get("version"))


def is_spec(text: str) -> bool:
    """True when ``text`` names a factory by import path or file (``...:attribute``)."""
    return ":" in text


def find_source(name: str) -> ModelSource | None:
    """Return the source of a user's model ``name`` (an entry point name or a ``...:attribute``
    spec), or None when ``name`` is neither. Imports nothing: an entry point is looked up in the
    installed distributions' metadata, a spec only parsed (a file's path made absolute)."""
    if is_spec(name):
        path, _, attr = name.rpartition(":")
        if path.endswith(".py"):
            path = os.path.abspath(path)
        return ModelSource(name=name, spec=f"{path}:{attr}")
    return installed_source(name)


def installed_source(name: str) -> ModelSource | None:
    """The entry point ``name`` of group fmmodel.models as the installed distribution declares it
    (its spec and version), or None when no installed distribution provides one."""
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            version = ep.dist.version if ep.dist is not None else None
            return ModelSource(name=name, spec=ep.value, entry_point=True, version=version)
    return None


def trusted_source(recorded: ModelSource, named: Sequence[str] = (), *, where: str | os.PathLike[str] | None = None,
                   field: str = "trusted") -> ModelSource:
    """The source to import for a model that a checkpoint or a run folder records as ``recorded``.

    ``recorded`` is data: its spec is never imported. With ``named`` (the user's ``--model``
    values), the one that names the recorded code (the same spec; a file by a relative or an
    absolute path) is returned; none of them: refused. With nothing named, the entry point that
    an installed distribution declares under the recorded name is returned when the record says
    it is an installed model and the installed spec is the recorded one; otherwise refused.
    FmModelError (about ``where``; ``field`` the parameter that names models, for refusals the
    user fixes by naming one) says which.
    """
    if named:
        sources = {name: find_source(name) for name in named}
        for source in sources.values():
            if source is not None and source.spec == recorded.spec:
                return source
        got = ", ".join(f"{name!r} ({source.spec!r})" if source else f"{name!r} (no installed model or factory)"
                        for name, source in sources.items())
        raise FmModelError(f"refused: expected --model naming the recorded model {recorded.name!r} "
                           f"({recorded.spec!r}), got {got}", where, field=field)
    if not recorded.entry_point:
        raise FmModelError(f"refused: the recorded model comes from {recorded.spec!r}, not an installed model, and a "
                           f"checkpoint or run folder cannot choose code to import; if you trust that code, name it "
                           f"with --model (module:name or file.py:name)", where, field=field)
    installed = installed_source(recorded.name)
    if installed is None:
        raise FmModelError(f"expected an installed model {recorded.name!r} (entry point of group {ENTRY_POINT_GROUP}, "
                           f"recorded as {recorded.spec!r}), got no installed distribution providing it; install "
                           f"its package, or name its code with --model", where)
    if installed.spec != recorded.spec:
        raise FmModelError(f"refused: expected the installed model {recorded.name!r} to be the recorded code "
                           f"{recorded.spec!r}, got {installed.spec!r} from the installed distribution", where)
    return installed


def installed_models() -> list[str]:
    """Names of the models installed as entry points in group fmmodel.models."""
    return sorted(ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def load_factory(source: ModelSource) -> ModelFactory:
    """Import the factory of ``source``; FmModelError naming it when it cannot be found or is none,
    or when importing its module fails (SystemExit included: see :func:`user_code`).

    A plain callable is taken as a factory whose inputs and task the run decides.
    """
    path, _, attr = source.spec.rpartition(":")
    try:
        module = _module_from_file(path) if path.endswith(".py") else importlib.import_module(path)
        obj = getattr(module, attr)
    except (ImportError, AttributeError, OSError, SyntaxError) as exc:
        raise FmModelError(f"expected a model factory at {source.spec}, got {exc.__class__.__name__}: {exc}",
                           field="model") from None
    except KeyboardInterrupt:
        raise
    except (Exception, SystemExit) as exc:  # the module's own code failed (sys.exit included)
        raise _failed(source.name, f"import of {path}", exc) from exc
    if isinstance(obj, ModelFactory):
        return obj
    if callable(obj):
        return ModelFactory(build=obj)
    raise FmModelError(f"expected a ModelFactory or a callable at {source.spec}, got {type(obj).__name__}",
                       field="model")


def _module_from_file(path: str) -> Any:
    """Import a Python file as a module (named after the file, cached in sys.modules once it ran)."""
    if not os.path.isfile(path):
        raise ImportError(f"no file {path}")
    name = f"fmf_user_model_{abs(hash(path)):x}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:  # a half-run module is no module: the next import runs it again
        sys.modules.pop(name, None)
        raise
    return module


@contextlib.contextmanager
def user_code(model: str, stage: str) -> Iterator[None]:
    """Run a user's model code (its factory, its steps): an exception it raises, a SystemExit
    included, becomes one FmModelError naming the model and ``stage`` ("build", "training step 3
    of epoch 1"...), chained to the original (``FMF_TRACEBACK=1`` shows its traceback). Ctrl-C
    passes as it is."""
    try:
        yield
    except KeyboardInterrupt:
        raise
    except (Exception, SystemExit) as exc:
        raise _failed(model, stage, exc) from exc


def _failed(model: str, stage: str, exc: BaseException) -> FmModelError:
    detail = first_line(exc)
    return FmModelError(f"expected model {model!r} to run, got {type(exc).__name__}{': ' + detail if detail else ''} "
                        f"in its {stage} (FMF_TRACEBACK=1 shows where)")


def check_output(output: Any, target: torch.Tensor, num_classes: int, model: str) -> None:
    """Raise FmModelError unless ``output`` holds logits for ``target``: (B, classes) for class
    labels (B,), (B, classes, H, W) for masks (B, H, W), as FmFormer returns them."""
    expected = (int(target.shape[0]), num_classes, *(int(s) for s in target.shape[1:]))
    got = tuple(int(s) for s in output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
    if got != expected:
        raise FmModelError(f"expected model {model!r} to return logits of shape {expected} (batch, classes"
                           f"{', rows, cols' if target.dim() == 3 else ''}), got {got}", field="model")
