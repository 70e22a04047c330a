"""The base of every error that is the user's input or setup, not a bug.

The CLI prints these as one line naming the file or setting, without a stack
trace; anything else is a bug and keeps its traceback.
"""

import re


class SparkcnnError(Exception):
    pass


_REMOTE = re.compile(r"^(?:pipelines|featurizers)\.[\w.]+\.(\w+Error): (.+)$", re.MULTILINE)


def remote_error_message(exc: BaseException):
    """The one-line message of a SparkcnnError raised inside a Spark task, if that is what `exc` carries.

    Spark wraps an executor's exception in its own (PythonException, Py4JJavaError)
    whose text holds the remote traceback; its last sparkcnn error line is the
    message the user needs.
    """
    found = _REMOTE.findall(str(exc))
    return f"{found[-1][1]}" if found else None
