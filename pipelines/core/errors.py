"""The errors that are the user's input or setup (not bugs), and the exit code each one means.

The CLI prints these as one line naming the file or setting, without a stack trace, and exits
with the code of the error's kind (EXIT_CODES below, which `sparkcnn --help` and the README list),
so a scheduler can tell "fix the config" from "fix the data" from "retry later" without reading
the text.

An error class says its kind once, by its base: `SparkcnnError` (2), `DataError` (3),
`RetryableError` (4), `LockHeld` (5).  Errors raised inside Spark tasks reach the driver wrapped
in Spark's own exception, as text: their class name is looked up in the registry every
subclass joins, so a remote error keeps its exit code.
"""

import importlib
import re

EXIT_OK = 0
EXIT_BUG = 1
EXIT_CONFIG = 2
EXIT_DATA = 3
EXIT_RETRY = 4
EXIT_LOCKED = 5
EXIT_TERMINATED = 143     # 128 + SIGTERM, what shells and schedulers already read as "terminated"

EXIT_CODES = {
    EXIT_OK: "success (stages that were up to date included)",
    EXIT_CONFIG: "usage or config error: fix the command or the conf; do not retry",
    EXIT_DATA: "bad input data (a whole file is not what its format says): fix the data; do not retry",
    EXIT_RETRY: "infrastructure failure worth retrying (lost executor, dead Horovod worker, storage unreachable)",
    EXIT_LOCKED: "another run holds the lock of the run directory or dataset: retry later",
    EXIT_TERMINATED: "stopped by SIGTERM (a timeout, a kill): half-written outputs discarded; the same command "
                     "continues",
    EXIT_BUG: "an unexpected error (a bug in sparkcnn): the traceback is printed before the last line",
}

_BY_NAME: dict = {}     # class name -> exit code, for errors that arrive as text from Spark tasks


class SparkcnnError(Exception):
    """The user's command, conf or setup is wrong (exit 2) unless a subclass says otherwise."""
    exit_code = EXIT_CONFIG

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _BY_NAME[cls.__name__] = cls.exit_code


class DataError(SparkcnnError):
    """An input file is not what its format says (truncated, wrong header, unreadable)."""
    exit_code = EXIT_DATA


class RetryableError(SparkcnnError):
    """The infrastructure failed (executors, workers, stores); the same command may succeed later."""
    exit_code = EXIT_RETRY


class LockHeld(SparkcnnError):
    """Another run holds the lock of what this run would write."""
    exit_code = EXIT_LOCKED


class Terminated(SparkcnnError):
    """SIGTERM arrived: raised in the main thread so that every staging folder is discarded on the way out."""
    exit_code = EXIT_TERMINATED


_BY_NAME["SparkcnnError"] = EXIT_CONFIG
_BY_NAME["StoreUnreachable"] = EXIT_RETRY      # pipelines.core.storage's: an OSError, not a SparkcnnError

_REMOTE = re.compile(r"^((?:pipelines|featurizers)\.[\w.]+)\.(\w+(?:Error|Held|Conflict|Unreachable)): (.+)$",
                     re.MULTILINE)


def _exit_code_of(module: str, name: str) -> int:
    """The exit code of error class `name` raised in `module` of the library.  A class registers itself
    when its module is imported; an error raised in an executor may come from a module this driver never
    imported (the ingest task's IDX reader), so that module is imported to find out."""
    if name not in _BY_NAME:
        try:
            importlib.import_module(module)
        except Exception:          # noqa: BLE001 (not importable here: the default kind)
            pass
    return _BY_NAME.get(name, EXIT_CONFIG)


def remote_error(exc: BaseException):
    """(class name, one-line message) of the last sparkcnn error raised inside a Spark task that
    `exc` carries (Spark wraps it in PythonException or Py4JJavaError), or None."""
    found = _REMOTE.findall(str(exc))
    return found[-1][1:] if found else None


def remote_error_message(exc: BaseException):
    """The one-line message of a SparkcnnError raised inside a Spark task, if that is what `exc` carries."""
    found = remote_error(exc)
    return found[1] if found else None


# Spark's and Py4J's words for an infrastructure failure (an executor or the JVM went away).
_INFRA_TEXT = re.compile(r"ExecutorLostFailure|Lost executor|executor lost|SparkContext was shut down|"
                         r"Py4JNetworkError|Answer from Java side is empty|Connection refused|"
                         r"FetchFailed|Master removed our application|Could not connect|EndpointConnectionError|"
                         r"StoreUnreachable", re.IGNORECASE)
_CONFIG_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)


def classify(exc: BaseException):
    """(exit code, one-line message) for a failure the user can act on; None for a bug.

    OSError: a path that does not exist or may not be written is the conf's (2); any other
    (connection refused, timeouts, a store answering 5xx) is the infrastructure's (4).
    """
    if isinstance(exc, SparkcnnError):
        return exc.exit_code, str(exc)
    if isinstance(exc, OSError):
        return (EXIT_CONFIG if isinstance(exc, _CONFIG_OS_ERRORS) else EXIT_RETRY), str(exc)
    found = _REMOTE.findall(str(exc))
    if found:
        module, name, message = found[-1]
        return _exit_code_of(module, name), message
    text = str(exc)
    if type(exc).__name__ in ("Py4JJavaError", "Py4JNetworkError", "Py4JError") or "pyspark" in type(exc).__module__:
        match = _INFRA_TEXT.search(text)
        if match:
            first = next((line.strip() for line in text.splitlines() if match.group(0) in line), match.group(0))
            return EXIT_RETRY, f"Spark lost part of the cluster: {first[:300]}"
    return None


class IngestError(DataError, ValueError):
    """Input that cannot be ingested; the message names the file and the reason."""


class IngestSetupError(IngestError):
    """The conf names no usable input (a missing folder, no class subfolders, no rows left)."""
    exit_code = EXIT_CONFIG


class IngestCheckError(IngestError):
    """What the tasks reported and what is on the store disagree (a lost task attempt): run it again."""
    exit_code = EXIT_RETRY
