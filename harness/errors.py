"""The one exception type users see: a message that names the problem and the fix."""


class BenchError(Exception):
    """A user-facing error. The CLI prints `error: <message>` on one line and exits 2."""
