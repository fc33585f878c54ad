"""The `strongroom` console script (and `python -m strongroom`).

Importing the command and building its parser creates a few hundred thousand objects that live as long as
the process; the cyclic garbage collector walking them while they were being created cost about 60 ms on
every run. It stays off until the command starts (cli.main's callback turns it back on), and what exists by
then is frozen out of later collections.
"""

from __future__ import annotations

import gc
import sys

gc_deferred = False  # the collector was turned off here, for cli.main's callback to turn back on


def run() -> None:
    from strongroom.cli.agentclient import forward

    code = forward(sys.argv[1:])  # a running agent named by STRONGROOM_AGENT runs the command (docs/agent.md)
    if code is not None:
        sys.exit(code)
    global gc_deferred
    gc_deferred = True
    gc.disable()
    try:
        from strongroom.cli.main import run as run_command
    except KeyboardInterrupt:  # Ctrl-C while the command is still being imported: no traceback
        sys.stderr.write("strongroom: interrupted\n")
        sys.exit(130)
    run_command()
