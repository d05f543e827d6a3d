"""``python -m expertprompting.cli``: the command line."""

from . import entry

entry()
