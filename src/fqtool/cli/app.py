"""The Typer application, its global options and the error boundary.

Each command lives in its own module and exposes ``command``; they are registered here, in the order
``fqtool --help`` lists them. Only commands that work are registered.
"""

from __future__ import annotations

import errno
import importlib
import inspect
import sys
import traceback
import warnings
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape
from typer.core import TyperGroup

from fqtool._version import __version__
from fqtool.cli.console import err_console, warn
from fqtool.errors import FqtoolError, FqtoolWarning
from fqtool.train.recipe_spec import RECIPES

#: The module of the ``train-*`` commands: one per recipe of ``fqtool.train.recipe_spec.RECIPES``.
_TRAINING = "fqtool.cli.train_options"

#: (command name, module path); the module defines ``command`` (the training module: ``commands[name]``).
COMMANDS: list[tuple[str, str]] = [
    ("demo", "fqtool.cli.demo"),
    ("convert-rec", "fqtool.cli.convert_rec"),
    ("make-list", "fqtool.cli.make_list"),
    ("make-pairs", "fqtool.cli.make_pairs"),
    ("synth", "fqtool.cli.synth"),
    *[(spec.command, _TRAINING) for spec in RECIPES.values()],
    ("align", "fqtool.cli.align"),
    ("score", "fqtool.cli.score"),
    ("verify", "fqtool.cli.verify"),
    ("erc-curve", "fqtool.cli.erc_curve"),
    ("export", "fqtool.cli.export"),
    ("convert-weights", "fqtool.cli.convert_weights"),
    ("calibrate", "fqtool.cli.calibrate"),
    ("models", "fqtool.cli.models"),
]

_state = {"debug": False}

#: Errors of a full, over-quota, too-small or read-only file system: the user's to fix, not a bug.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _fail(message: str, code: int) -> NoReturn:
    """One line on stderr (after the traceback with ``--debug``) and exit ``code``."""
    if _state["debug"]:
        traceback.print_exc(file=sys.stderr)
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code) from None


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Every Python warning as one line in fqtool's style: fqtool's own as they are, others (PIL's Corrupt
    EXIF and DecompressionBombWarning, numpy's RuntimeWarning, …) with their category instead of
    Python's two lines with a source path."""
    text = " ".join(str(message).split())
    if issubclass(category, FqtoolWarning) or category is UserWarning:
        warn(text)
    else:
        warn(f"{text} ({category.__name__})")


def one_line_usage_error(exc: Any) -> None:
    """A click usage error (bad option value, out of range, unknown choice) as one ``error:`` line on
    stderr, like every other fqtool error; click's exit code (2) is kept by the caller."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # the help was shown instead
        return
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None and getattr(exc, "cmd", None) else ""
    message = " ".join(exc.format_message().split())
    err_console.print(f"[bold red]error:[/] {escape(message)}{escape(hint)}", markup=True, highlight=False,
                      soft_wrap=True)


def _narrow() -> bool:
    """Under 100 columns the type column (``<path>``, ``<int range> [x>=1]``) leaves the help ~17
    characters; there it is left out (the help text names what each option takes)."""
    import shutil

    return shutil.get_terminal_size().columns < 100


def _element_type(text):
    """``<list[Path]>`` → ``<path>...``: a repeatable option shows what one value is, as click does."""
    import re

    match = re.fullmatch(r"<list\[(\w+)\]>", str(text)) if text is not None else None
    return f"<{match.group(1).lower()}>..." if match else text


def _tidy_help() -> None:
    """Help that reads at 80 columns: no ``<bool>`` type beside flags, no ``[default: ]`` for an empty
    default, usage errors on one line. Typer has no setting for these, so its renderers are wrapped."""
    from typer import core, rich_utils

    display_type = core.TyperOption.display_type_rich
    number_range = core.TyperOption._get_number_range_help_str

    def no_bool_type(self, ctx):
        if self.is_flag or self.is_bool_flag or _narrow():
            return None
        return _element_type(display_type(self, ctx))

    def no_narrow_range(self):
        return None if _narrow() else number_range(self)

    core.TyperOption.display_type_rich = no_bool_type
    argument_type = core.TyperArgument.display_type_rich
    core.TyperArgument.display_type_rich = (
        lambda self, ctx: None if _narrow() else _element_type(argument_type(self, ctx)))
    core.TyperOption._get_number_range_help_str = no_narrow_range
    for cls in (core.TyperOption, core.TyperArgument):
        default_string = cls._get_default_string

        def no_empty_default(self, *args, _original=default_string, **kwargs):
            text = _original(self, *args, **kwargs)
            return "" if str(text).strip(" '\"[]()") == "" else text

        cls._get_default_string = no_empty_default
    rich_utils.rich_format_error = one_line_usage_error


_tidy_help()


class _ErrorBoundary(TyperGroup):
    """Turns :class:`FqtoolError` (and a full or read-only disk) into one line on stderr and exit 2.

    ``--debug`` prints the traceback as well but keeps the exit code, so scripts see the same result.
    """

    def invoke(self, ctx: Any) -> Any:
        with warnings.catch_warnings():  # Python's filters stay; what they let through is one line
            warnings.showwarning = _show_warning
            return self._invoke(ctx)

    def _invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except FqtoolError as exc:
            _fail(str(exc), exc.exit_code)
        except OSError as exc:
            if exc.errno not in _WRITE_ERRNOS:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            _fail(f"{where}cannot write ({exc.strerror or exc})", 2)
        except KeyboardInterrupt:
            if _state["debug"]:
                raise
            err_console.print("interrupted", highlight=False)
            raise typer.Exit(130) from None

    def list_commands(self, ctx: Any) -> list[str]:
        return [name for name, _ in COMMANDS if name in self.commands] + sorted(
            name for name in self.commands if name not in dict(COMMANDS)
        )


app = typer.Typer(
    cls=_ErrorBoundary,
    name="fqtool",
    help="Face recognition training and label-free face image quality: data, training, evaluation, export.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"fqtool {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
) -> None:
    _state["debug"] = debug


def _help_text(doc: str | None) -> str | None:
    """Docstring → help: paragraphs re-flowed (the terminal wraps them), blank lines kept."""
    if not doc:
        return None
    paragraphs = [" ".join(part.split()) for part in inspect.cleandoc(doc).split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)


def _register_commands() -> None:
    for name, module_path in COMMANDS:
        module = importlib.import_module(module_path)
        command = module.commands[name] if module_path == _TRAINING else module.command
        app.command(name, help=_help_text(command.__doc__))(command)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())
