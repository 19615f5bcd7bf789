"""Settings for every test process.

``scripts/run-tests.sh`` starts one of its two pytest processes in the background of a non-interactive shell,
which starts it with SIGINT ignored; every process a test spawns would inherit that, and commands that are
stopped with Ctrl-C (the official CLI's ``backend.ai app``, which its ``ssh`` and ``scp`` stop that way)
would then never stop. Taking the default handler back here gives the children the default disposition.
"""

from __future__ import annotations

import signal

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
