"""What every pathdep command line shares: one-line errors and exit codes.

- :class:`OneLineParser`: argparse errors as one line (``prog: error: ...``), status 2.
- :func:`run_command`: runs a command's body and turns what it raises into one line on stderr
  and the project's exit codes: 0 done, 1 the run failed or the environment did (a read-only or
  full disk, no memory; the line names the path or the resource), 2 bad input
  (:class:`pathdep.errors.BadInput`, and a missing input file).
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable

from pathdep.errors import BadInput

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

# OSErrors that say the input names something that is not there (bad input), as opposed to an
# environment that cannot do what a valid run asks (disk full, read-only, permissions).
_INPUT_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


class OneLineParser(argparse.ArgumentParser):
    """argparse, with an error printed as one line (no usage block) and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_BAD_INPUT)


def one_line(text: object) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else ""


def _fail(prefix: str, message: str, code: int) -> int:
    sys.stderr.write(f"{prefix}error: {one_line(message)}\n")
    return code


def run_command(body: Callable[[], int], prog: str = "") -> int:
    """Run ``body`` and return its exit code, mapping failures to one line and a code."""
    prefix = f"{prog}: " if prog else ""
    try:
        return body()
    except BadInput as err:
        return _fail(prefix, str(err), EXIT_BAD_INPUT)
    except MemoryError as err:
        return _fail(prefix, f"out of memory ({one_line(err) or 'MemoryError'})", EXIT_FAILED)
    except OSError as err:
        where = f" {err.filename}" if err.filename else ""
        reason = err.strerror or one_line(err) or type(err).__name__
        code = EXIT_BAD_INPUT if err.errno in _INPUT_ERRNOS else EXIT_FAILED
        return _fail(prefix, f"cannot use{where}: {reason}", code)
    except RuntimeError as err:
        # torch.OutOfMemoryError (CUDA) and XLA's RESOURCE_EXHAUSTED are RuntimeErrors.
        if type(err).__name__ == "OutOfMemoryError" or "RESOURCE_EXHAUSTED" in str(err):
            return _fail(prefix, f"out of memory ({one_line(err)})", EXIT_FAILED)
        raise
