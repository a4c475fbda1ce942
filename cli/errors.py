"""Turn the packages' errors into click errors: one line, no traceback, the right exit code.

Exit codes: 1 for data problems (bad files, stores, checkpoints; failed checks), 2 for usage
errors (an option's value out of range: the library error's ``field`` names the parameter, and
it is reported under the option the user typed), 130 when interrupted (Ctrl-C, SIGINT; with
what to run to continue where the command can resume). Anything else a command raises is a
bug or a failure the library does not know yet: it is still one line (its type and message)
and exit code 1; ``FMF_TRACEBACK=1`` in the environment shows the traceback instead, as it does
for a library error that names a failure of other code (a user's model, which it chains).
"""
from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import IO, Any, TypeVar

import click

from fmdata.errors import FmfError, first_line

F = TypeVar("F", bound=Callable[..., Any])
ENV_TRACEBACK = "FMF_TRACEBACK"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C


class DataError(click.ClickException):
    """A data problem: exit code 1 (click keeps 2 for usage errors)."""

    exit_code = 1


class InterruptedExit(click.ClickException):
    """Ctrl-C: exit code 130, with what to run to continue when the command can resume."""

    exit_code = EXIT_INTERRUPTED


class OptionError(click.BadParameter):
    """A value out of range for an option: exit code 2, shown as one line (no usage block)."""

    def __init__(self, message: str, param: click.Parameter) -> None:
        super().__init__(message, param=param)

    def show(self, file: IO[Any] | None = None) -> None:
        # click's own show() prints the usage block too (three more lines): the message is enough
        click.echo(f"Error: {self.format_message()}", file=file or sys.stderr)


def _parameter(field: str | None) -> click.Parameter | None:
    """The current command's parameter that the library's ``field`` names, if there is one."""
    ctx = click.get_current_context(silent=True)
    if field is None or ctx is None:
        return None
    return next((p for p in ctx.command.params if p.name == field), None)


def user_errors(fn: F) -> F:
    """Decorator for click commands: every failure becomes one line and an exit code (module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click's own usage errors and exits
        except FmfError as exc:  # FmDataError, FmModelError
            if os.environ.get(ENV_TRACEBACK) and exc.__cause__ is not None:
                raise  # it names a failure of other code (a user's model): the traceback shows where
            param = _parameter(exc.field)
            if param is not None:
                raise OptionError(str(exc), param) from None
            raise DataError(str(exc)) from None
        except OSError as exc:
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            raise DataError(f"{where}{exc.strerror or exc}") from None
        except KeyboardInterrupt as exc:  # fmdata.errors.Interrupted says how to resume
            raise InterruptedExit(first_line(exc) or "interrupted") from None
        except Exception as exc:
            if os.environ.get(ENV_TRACEBACK):
                raise
            detail = first_line(exc)
            raise DataError(f"unexpected {type(exc).__name__}{': ' + detail if detail else ''} "
                            f"({ENV_TRACEBACK}=1 shows where)") from None

    return wrapper  # type: ignore[return-value]
