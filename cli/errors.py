"""Turn the packages' error types into click errors: one line, non-zero exit, no traceback."""
from __future__ import annotations

import functools
from typing import Any, Callable

import click

from fmdata.errors import FmDataError


class DataError(click.ClickException):
    """Exit code 2 is click's usage error; data problems exit with 1 (verify failures too)."""

    exit_code = 1


def _model_error_type() -> tuple[type[BaseException], ...]:
    try:  # fmmodel needs torch; fmdata commands must work without it
        from fmmodel.errors import FmModelError
    except ImportError:
        return ()
    return (FmModelError,)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for click commands: FmDataError / FmModelError / OSError become one-line errors."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (FmDataError, *_model_error_type()) as exc:
            raise DataError(str(exc)) from None
        except OSError as exc:
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            raise DataError(f"{where}{exc.strerror or exc}") from None

    return wrapper
