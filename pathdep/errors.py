"""The one base class of bad input, so every command line maps it to the same exit code.

Every package's errors for input that cannot describe a run (a config value out of range, a
missing or truncated model folder, a malformed data file, an output folder in use) derive from
:class:`BadInput`; the command lines print its message as one line and exit with status 2
(:func:`pathdep.cli.run_command`). Failures of the environment (a read-only or full disk, no
memory) are ``OSError``/``MemoryError`` and exit with status 1.
"""

from __future__ import annotations


class BadInput(ValueError):
    """Input that cannot describe a run; the message names the problem (exit status 2)."""
