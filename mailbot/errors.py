"""The error hierarchy and the process exit codes.

Library code raises these; the CLI turns them into one clear line and a named exit code.
`TransientError` is worth retrying (network, server busy, database briefly down);
`PermanentError` is not (bad config, malformed input, missing model).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Named process exit codes (values follow BSD sysexits.h where one fits)."""

    OK = 0
    FAILURE = 1  # some inputs failed (e.g. `mailbot parse` with an unparsable file)
    USAGE = 64  # EX_USAGE: wrong command-line arguments
    DATA = 65  # EX_DATAERR: input data was malformed
    NO_INPUT = 66  # EX_NOINPUT: an input file or model directory does not exist
    UNAVAILABLE = 69  # EX_UNAVAILABLE: a service (database, IMAP, LLM) cannot be reached
    SOFTWARE = 70  # EX_SOFTWARE: an internal error; a bug worth reporting
    TEMPFAIL = 75  # EX_TEMPFAIL: try again later (e.g. another instance holds the lock)
    CONFIG = 78  # EX_CONFIG: the configuration file is invalid


class MailbotError(Exception):
    """Base class of every error mailbot raises on purpose."""

    exit_code: ExitCode = ExitCode.SOFTWARE


class TransientError(MailbotError):
    """A failure that may pass: retry with backoff."""

    exit_code = ExitCode.UNAVAILABLE


class PermanentError(MailbotError):
    """A failure that retrying will not fix."""

    exit_code = ExitCode.DATA


class ConfigError(PermanentError):
    """The configuration file is missing or invalid."""

    exit_code = ExitCode.CONFIG


class ParseError(PermanentError):
    """An email could not be turned into an `InboundMessage`."""

    exit_code = ExitCode.DATA


class ModelError(PermanentError):
    """A model directory is missing, incomplete or corrupt."""

    exit_code = ExitCode.NO_INPUT


class DatabaseUnavailable(TransientError):
    """The audit database cannot be reached."""

    exit_code = ExitCode.UNAVAILABLE


class MailboxError(TransientError):
    """An IMAP server refused or dropped us (login, folder, network)."""

    exit_code = ExitCode.UNAVAILABLE


class Stopping(MailbotError):
    """The worker was asked to stop (SIGTERM) while it waited; nothing was lost."""

    exit_code = ExitCode.OK


class LeaseLost(TransientError):
    """Another worker took over this mailbox: whatever this one had not committed is dropped."""

    exit_code = ExitCode.TEMPFAIL


class AlreadyRunning(TransientError):
    """Another instance holds the lease on this mailbox or database."""

    exit_code = ExitCode.TEMPFAIL
