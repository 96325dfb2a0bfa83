"""The one exception family users see: bad input, reported as one line, exit status 2.

Every error raised for a bad config, rule expression or data file is a `BacktestError` whose
message reads ``file: location: what is wrong (hint)``. The CLI prints it alone on stderr and
exits 2; nothing else in the package prints tracebacks for bad input.
"""

from __future__ import annotations


class BacktestError(Exception):
    """Bad input detected before (or instead of) doing work; the message is one line.

    `detail`, when set, is extra context (a rule with a caret under the offending column) that
    the CLI prints after that line only on a terminal or with `--verbose`; the first line
    stands on its own, so scripts always read exactly one line.
    """

    detail: str | None = None


def _one_line(text: str, width: int = 120) -> str:
    """`text` with control characters escaped (one line), cut to `width` characters."""
    if text.isprintable() and len(text) <= width:
        return text
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text if len(text) <= width else text[:width - 3] + "..."


class ConfigError(BacktestError):
    """A config or rule expression is invalid.

    `source` is the config file (or ``<dict>`` for API input), `field` the dotted path
    (``alerts[0].when``), `message` what is wrong and `hint` how to fix it.
    """

    def __init__(self, source: str, field: str, message: str, hint: str | None = None):
        field = _one_line(field)   # keys are user data: a key may hold a line break
        self.source, self.field, self.message, self.hint = source, field, message, hint
        text = f"{source}: {field}: {message}" if field else f"{source}: {message}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class DataError(BacktestError):
    """A data file is unreadable or breaks a rule (columns, order, prices).

    `row` is the 1-based data row in the file (header excluded) when one row is at fault.
    """

    def __init__(self, path: str, message: str, row: int | None = None, column: str | None = None):
        self.path, self.message, self.row, self.column = path, message, row, column
        where = []
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        loc = (", ".join(where) + ": ") if where else ""
        super().__init__(f"{path}: {loc}{message}")


class ClusterError(Exception):
    """A cluster failed while running: the message names the cluster (symbol, dates) and why.

    Not bad input: the CLI reports it in one line and exits 1. Built from one string so it
    pickles across processes unchanged.
    """


class WorkerLost(Exception):
    """A worker process died (killed, out of memory) while running clusters."""


class FolderBusy(BacktestError):
    """Another run (a process, or a thread of this one) is writing the same results folder.

    The second run stops at once, before any work, rather than wait and then silently replace
    the first run's results. Exit status 2, like bad input: the fix is in the command line.
    """


class OutputError(Exception):
    """The results could not be written (disk full, read-only file system, a quota or file
    size limit): one line naming the results folder, the reason and what to do. Nothing was
    replaced; the CLI prints it and exits 1."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned by the CLI into an interrupt so that it cleans up exactly as Ctrl-C
    does: workers stopped, temporary files removed, earlier results left in place."""
