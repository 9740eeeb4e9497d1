"""An audit log of every remote command zrelay runs: ``ZRELAY_COMMAND_LOG=FILE``.

One JSON object per line (``{"at": …, "host": …, "command": …}``), appended as
each command starts, whatever path runs it (a short command, either end of a
stream). What a run did on a machine can be read back exactly, and compared
with what ``--dry-run`` printed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import IO

ENV = "ZRELAY_COMMAND_LOG"

_lock = threading.Lock()
_file: IO[str] | None = None
_path: str | None = None


def record(host: str, command: str) -> None:
    """Append ``command`` run on ``host`` to the log, when one is asked for."""
    path = os.environ.get(ENV)
    if not path:
        return
    global _file, _path
    line = json.dumps({"at": round(time.time(), 6), "host": host, "command": command}) + "\n"
    with _lock:
        if _file is None or _path != path:
            _file = open(path, "a", encoding="utf-8")   # noqa: SIM115 - kept open for the process
            _path = path
        _file.write(line)
        _file.flush()
