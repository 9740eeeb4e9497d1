"""Third-party warnings stay off the user's terminal, and only the known ones are hidden.

cryptography deprecates DSA and warns whenever asyncssh touches its DSA classes (ten
lines on stderr at import). zrelay hides exactly that category from asyncssh's modules.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
from cryptography.utils import CryptographyDeprecationWarning

from tests.integration.helpers import REPO
from zrelay.transport import sshlib


def _warn_from(module: str, category: type[Warning]) -> None:
    """Raise a warning as if the code of ``module`` had raised it (filters match on that name)."""
    code = compile("import warnings\nwarnings.warn('test warning', category)", f"<{module}>", "exec")
    exec(code, {"__name__": module, "category": category})  # noqa: S102


@pytest.mark.parametrize(("module", "category", "shown"), [
    ("asyncssh.crypto.misc", CryptographyDeprecationWarning, False),
    ("asyncssh", CryptographyDeprecationWarning, False),
    ("asyncsshx.misc", CryptographyDeprecationWarning, True),      # another package, whatever its name
    ("paramiko.transport", CryptographyDeprecationWarning, True),   # another user of cryptography
    ("zrelay.transport.ssh", CryptographyDeprecationWarning, True),  # zrelay's own use would be a bug to see
    ("asyncssh.connection", UserWarning, True),                     # asyncssh's other warnings
    ("asyncssh.connection", RuntimeWarning, True),
])
def test_only_cryptography_deprecations_raised_by_asyncssh_are_hidden(
        module: str, category: type[Warning], shown: bool) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sshlib.quiet_cryptography_deprecations()
        _warn_from(module, category)
    assert [w.category for w in caught] == ([category] if shown else [])


def test_importing_the_transport_prints_nothing() -> None:
    """A fresh interpreter with Python's default warning filters, as ``zrelay`` runs: asyncssh is
    imported through zrelay.transport and nothing reaches stderr."""
    proc = subprocess.run([sys.executable, "-c", "import zrelay.transport, asyncssh, zrelay.paths"],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""

