"""What a torch.export archive (``.pt2``) may hold before torch reads it: data, never code.

``torch.export.load`` (torch 2.13) is no data reader. Reading the archive it would

- unpickle weights and constants whose config says ``use_pickle`` (``torch.load(weights_only=False)``),
  custom objects (TorchScript's unpickler) and opaque objects (Python's ``pickle.loads``);
- read the sample inputs with ``torch.load(weights_only=True)`` and, when that fails, again with
  ``weights_only=False``;
- parse every symbolic shape expression with ``sympy.sympify`` (Python's ``eval``);
- resolve a graph node's target ``torch.a.b`` by attribute lookup from the torch module (any
  function reachable from it, ``torch.os.system`` included), called when the graph runs;

and ``ExportedProgram.module()`` turns the archive's ``guards_code`` into Python source and
``exec``-s it. :func:`checked_pt2` therefore reads the archive itself first (zip and JSON only;
the sample inputs with the weights-only unpickler) and refuses anything that would make torch
run code: unknown files, a compiled AOTInductor model, pickled or custom payloads, sample inputs
that need more than the weights-only unpickler, node targets other than ATen operators and a few
of Python's ``operator`` functions, expressions with anything but numbers, arithmetic, symbol
names and sympy's and torch's shape functions. It returns a copy of the archive, in memory, with
the guards and the nodes' metadata (stack traces, module paths: text for people) left out: the
loader checks the inputs' shapes itself (:mod:`fmmodel.model.export`). docs/reliability.md says
what loading an export still trusts.
"""
from __future__ import annotations

import io
import json
import re
import tokenize
import warnings
import zipfile
from typing import Any

import torch

from fmmodel.errors import FmModelError

AOTI_DIR = "data/aotinductor/"
# the files a torch.export archive holds, relative to its one root folder
_FILES = re.compile(r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|"
                    r"models/[\w.-]+\.json|data/weights/[\w.-]+|data/constants/[\w.-]+|"
                    r"data/sample_inputs/[\w.-]+\.pt|extra/[\w.-]+)")
_ATEN = re.compile(r"torch\.ops\.aten\.[A-Za-z_]\w*\.[A-Za-z_]\w*")
_PYTHON_TARGETS = {f"_operator.{n}" for n in ("getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg",
                                              "pow", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_")}
_PYTHON_TARGETS |= {f"torch.sym_{n}" for n in ("max", "min", "float", "int", "not", "ite", "sum", "sqrt")}
_PYTHON_TARGETS |= {f"math.{n}" for n in ("ceil", "floor", "trunc")}
# names a shape expression may use: sympy's constructors and logic, torch's shape functions
_EXPR_NAMES = frozenset(
    "Symbol Integer Rational Float Max Min Abs Add Mul Pow Eq Ne Ge Gt Le Lt And Or Not True False oo "
    "positive negative integer nonnegative nonpositive real finite FloorDiv ModularIndexing Where PythonMod Mod "
    "CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift PowByNatural FloatPow FloatTrueDiv IntTrueDiv "
    "IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat Identity".split())
_SYMBOL = re.compile(r"[a-z]+\d+")
_EXPR_OPS = frozenset("+ - * / // % ** ( ) , = < > <= >= == != & | ~".split())


def is_pt2(names: list[str]) -> bool:
    """Whether the zip members ``names`` are a torch.export archive (a root folder holding
    ``archive_format``; what it reads decides between pt2 and pt2 with AOTInductor code)."""
    return any(n.count("/") == 1 and n.endswith("/archive_format") for n in names)


def is_aoti(names: list[str]) -> bool:
    """Whether the archive holds AOTInductor's compiled model (a shared library)."""
    return any(f"/{AOTI_DIR}" in n for n in names)


def _refuse(why: str, path: str) -> FmModelError:
    return FmModelError(f"expected a torch.export archive of plain data, got {why}; refused: torch.export.load "
                        f"would run code for it", path)


def _check_expression(text: str, path: str) -> None:
    """Refuse a shape expression that is more than numbers, arithmetic, symbols and the allowed names."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        raise _refuse(f"an unreadable shape expression {text[:80]!r}", path) from None
    for tok in tokens:
        kind, s = tok.type, tok.string
        ok = (kind in (tokenize.NUMBER, tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER)
              or (kind == tokenize.NAME and (s in _EXPR_NAMES or _SYMBOL.fullmatch(s) is not None))
              or (kind == tokenize.STRING and re.fullmatch(r"'[a-z]+\d+'", s) is not None)
              or (kind == tokenize.OP and s in _EXPR_OPS))
        if not ok:
            raise _refuse(f"a shape expression with {s!r} ({text[:80]!r})", path)


def _check_target(target: Any, path: str) -> None:
    if not isinstance(target, str) or not (_ATEN.fullmatch(target) or target in _PYTHON_TARGETS):
        raise _refuse(f"a graph node calling {str(target)[:80]!r} (not an ATen operator)", path)


def _sanitise(node: Any, path: str) -> Any:
    """Check a model.json value and return it without node metadata and guards (see the module docstring)."""
    if isinstance(node, list):
        return [_sanitise(v, path) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    is_node = "target" in node  # a graph node (the only dicts with a target)
    for key, value in node.items():
        if key == "guards_code":
            out[key] = []  # Python source that .module() exec-s: never kept
            continue
        if is_node and key == "metadata":
            out[key] = {}
            continue
        if key in ("target", "as_operator"):
            _check_target(value, path)
        elif key == "expr_str":
            if not isinstance(value, str):
                raise _refuse("a shape expression that is not text", path)
            _check_expression(value, path)
        elif key == "range_constraints" and isinstance(value, dict):
            for name in value:
                if not _SYMBOL.fullmatch(str(name)):
                    raise _refuse(f"a range constraint on {str(name)[:40]!r}", path)
        elif key in ("as_custom_obj", "as_opaque_obj") or (key == "custom_obj_values" and value):
            raise _refuse("a custom object", path)
        out[key] = _sanitise(value, path)
    return out


def _check_payloads(z: zipfile.ZipFile, root: str, path: str) -> None:
    """Refuse pickled weights or constants and constants that are not tensors."""
    for kind in ("weights", "constants"):
        for name in z.namelist():
            if not (name.startswith(f"{root}/data/{kind}/") and name.endswith("_config.json")):
                continue
            try:
                config = json.loads(z.read(name)).get("config", {})
                entries = list(config.items())
            except (ValueError, AttributeError):
                raise _refuse(f"an unreadable {kind} list ({name})", path) from None
            for fqn, entry in entries:
                if not isinstance(entry, dict) or entry.get("use_pickle") is not False:
                    raise _refuse(f"{kind[:-1]} {str(fqn)[:60]!r} stored as a pickle", path)
                if kind == "constants" and not str(entry.get("path_name", "")).startswith("tensor_"):
                    raise _refuse(f"constant {str(fqn)[:60]!r} that is not a tensor", path)
    for name in z.namelist():
        if name.startswith(f"{root}/data/sample_inputs/"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.load(io.BytesIO(z.read(name)), weights_only=True)
            except Exception as exc:  # the weights-only unpickler refuses code, and fails on much else
                raise _refuse(f"sample inputs the weights-only unpickler cannot read ({type(exc).__name__})",
                              path) from None


def checked_pt2(path: str) -> io.BytesIO:
    """Return the torch.export archive at ``path`` checked and sanitised, in memory, for
    ``torch.export.load``; FmModelError (one line, naming the file) for anything that would run code."""
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise FmModelError(f"expected a torch.export archive (a zip file), got {exc}", path) from None
    with z:
        names = z.namelist()
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) != 1:
            raise _refuse(f"{len(roots)} root folders", path)
        root = roots.pop()
        if is_aoti(names):
            raise _refuse("an AOTInductor package (compiled code)", path)
        for n in names:
            if not n.startswith(f"{root}/") or not _FILES.fullmatch(n[len(root) + 1:]):
                raise _refuse(f"an unexpected member {n[:80]!r}", path)
        if z.read(f"{root}/archive_format") != b"pt2":
            raise _refuse("another archive format", path)
        _check_payloads(z, root, path)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as w:
            for info in z.infolist():
                data = z.read(info.filename)
                if info.filename.startswith(f"{root}/models/"):
                    try:
                        program = json.loads(data)
                    except ValueError:
                        raise _refuse(f"an unreadable program {info.filename!r}", path) from None
                    data = json.dumps(_sanitise(program, path)).encode()
                w.writestr(info, data)
    out.seek(0)
    return out
