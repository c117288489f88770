"""The ``segclip`` click group and the one place user errors become one line.

Every user error -- a ``SegclipError`` or one of click's own usage errors (missing argument, bad
value, unknown option) -- is printed as ``error: <what and where>; <what to do>`` with exit code 2
(1 for a failed quality gate), never as a traceback or click's four-line usage block.  SIGTERM
unwinds like Ctrl-C, so atomic writes (``segclip.atomic``) remove their own partial files first.
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from segclip.errors import SegclipError, disk_error


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so ``finally``/``except BaseException`` clean-ups run."""


def _on_sigterm(signum, frame):
    raise Terminated()


def usage_error_line(e: click.ClickException) -> str:
    """click's usage block -> ``<what>; <what to do>`` on one line."""
    what = " ".join(e.format_message().split()).rstrip(".")
    what = what[:1].lower() + what[1:]
    ctx = getattr(e, "ctx", None)
    if ctx is None:
        return f"{what}; see segclip --help"
    if isinstance(e, click.BadParameter) and not isinstance(e, click.MissingParameter):
        return f"{what}; give a valid value (see {ctx.command_path} --help)"
    pieces = " ".join(ctx.command.collect_usage_pieces(ctx))
    return f"{what}; usage: {ctx.command_path} {pieces} (see {ctx.command_path} --help)"


def clean_partials(*dirs) -> None:
    """At a command's start: remove partial files/folders that killed segclip processes left in
    the folders it is about to write (one ``note:`` line on stderr when there were any)."""
    from segclip.atomic import sweep_partials

    sweep_partials(*(Path(d) for d in dirs if d is not None), log=lambda m: click.echo(m, err=True))


class SegclipGroup(click.Group):
    def main(self, *args, **kwargs):
        try:
            old = signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:  # not the main thread: leave signals alone
            old = None
        try:
            return super().main(*args, **kwargs)
        except Terminated:
            click.echo("terminated (SIGTERM)", err=True)
            sys.exit(128 + signal.SIGTERM)
        finally:
            if old is not None:
                signal.signal(signal.SIGTERM, old)

    def _fail(self, message: str, code: int):
        click.echo(f"error: {message}", err=True)
        sys.exit(code)

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.exceptions.Exit:
            raise
        except click.ClickException as e:  # group-level: unknown command, bad --version use
            self._fail(usage_error_line(e), e.exit_code)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SegclipError as e:
            self._fail(str(e), e.exit_code)
        except click.exceptions.Exit:
            raise
        except click.ClickException as e:
            self._fail(usage_error_line(e), e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except OSError as e:  # a full disk, a read-only file system: partial outputs were removed on the way out
            err = disk_error(e)
            if err is None:
                raise
            self._fail(str(err), err.exit_code)
