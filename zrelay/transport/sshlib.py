"""Import asyncssh without its slowest step.

On import, ``asyncssh.crypto.pq`` asks ``ctypes.util.find_library`` for liboqs (for the
optional sntrup761 key exchange). On Linux that runs ``ldconfig -p``, then ``gcc`` and ``ld``
when the library is absent: 35 ms of every zrelay start-up, a tenth of it. Where no liboqs
file is in the dynamic linker's cache or its usual directories, the answer is known to be
None and is given without those programs; anywhere else asyncssh searches as usual.

Also: asyncssh still names cryptography's DSA classes (at import, and for ssh-dss keys), and
cryptography deprecates DSA with a warning on every such access: ten lines on stderr before
any output of ``zrelay sync --help``. They are addressed to asyncssh's authors, not to the
user, so exactly those (that category, raised from asyncssh's own modules) are not shown.

And: asyncssh's logger turns every debug message's arguments into text before the logging
module decides whether the message is wanted, a dozen times per connection and per command
(a tenth of ``status``'s time over 500 hosts). With the guard, an unwanted message costs one
level check; a wanted one is logged as before.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import glob
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator

#: The names asyncssh asks ``find_library`` for.
OQS_NAMES = frozenset({"oqs", "liboqs"})
LD_SO_CACHE = "/etc/ld.so.cache"
#: The modules whose use of deprecated cryptography APIs is not the user's business (a regex on
#: the warning's module, as ``warnings.filterwarnings`` takes it).
ASYNCSSH_MODULES = r"asyncssh(\.|$)"
#: asyncssh's X.509 module (see skip_x509_without_pyopenssl).
X509_MODULE = "asyncssh.crypto.x509"
#: Searched by find_library's gcc/ld fallback without being in the cache until ldconfig runs.
DEFAULT_LIBRARY_DIRS = ("/usr/local/lib", "/usr/local/lib64", "/usr/lib", "/usr/lib64", "/lib", "/lib64")


def liboqs_may_exist(cache_path: str = LD_SO_CACHE, environ: dict[str, str] | None = None) -> bool:
    """False only when liboqs is surely absent: not named in the linker cache and no
    ``liboqs.so*`` in LD_LIBRARY_PATH, LIBRARY_PATH or the default library directories."""
    if sys.platform != "linux":
        return True  # find_library needs no external programs elsewhere: nothing to save
    env = os.environ if environ is None else environ
    try:
        with open(cache_path, "rb") as f:
            if b"liboqs.so" in f.read():
                return True
    except OSError:
        return True  # no cache to trust: let asyncssh look
    dirs = [d for var in ("LD_LIBRARY_PATH", "LIBRARY_PATH") for d in env.get(var, "").split(os.pathsep) if d]
    return any(glob.glob(os.path.join(d, "liboqs.so*")) for d in (*dirs, *DEFAULT_LIBRARY_DIRS))


@contextlib.contextmanager
def _no_oqs_search() -> Iterator[None]:
    find_library = ctypes.util.find_library

    def answer(name: str) -> str | None:
        return None if name in OQS_NAMES else find_library(name)

    ctypes.util.find_library = answer
    try:
        yield
    finally:
        ctypes.util.find_library = find_library


def quiet_cryptography_deprecations() -> None:
    """Hide cryptography's deprecation warnings about what asyncssh uses, and nothing else:
    every other warning, and these same ones from any other module, still shows."""
    from cryptography.utils import CryptographyDeprecationWarning

    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning, module=ASYNCSSH_MODULES)


def skip_x509_without_pyopenssl() -> bool:
    """Where pyOpenSSL is not installed asyncssh has no X.509 support, whatever happens: its
    ``asyncssh.crypto.x509`` imports cryptography's X.509 package first (40-55 ms of every
    start-up on the lab machine), then fails on ``from OpenSSL import crypto``, and asyncssh
    carries on without it. Marking that module absent up front gives the same outcome without
    the wasted import; True when it was marked."""
    if "asyncssh" in sys.modules or X509_MODULE in sys.modules or importlib.util.find_spec("OpenSSL"):
        return False
    sys.modules[X509_MODULE] = None  # type: ignore[assignment]  # asyncssh's ``from .x509 import …`` then raises ImportError, as it did
    return True


def import_asyncssh() -> None:
    """``import asyncssh``, skipping the liboqs search when liboqs is surely absent and the X.509
    import when pyOpenSSL is, without cryptography's deprecation warnings about asyncssh."""
    quiet_cryptography_deprecations()
    skip_x509_without_pyopenssl()
    if "asyncssh" in sys.modules or liboqs_may_exist():
        import asyncssh  # noqa: F401
    else:
        with _no_oqs_search():
            import asyncssh  # noqa: F401,F811
    guard_debug_logging()


def guard_debug_logging() -> None:
    """Make asyncssh's ``SSHLogger.log`` ask whether a level is wanted before it formats
    anything (see the module's docstring). Installed once; idempotent."""
    from asyncssh.logging import SSHLogger

    log = SSHLogger.log
    if getattr(log, "zrelay_guarded", False):
        return

    def guarded(self: SSHLogger, level: int, msg: object, *args: object, **kwargs: object) -> None:
        if self.isEnabledFor(level):
            log(self, level, msg, *args, **kwargs)

    guarded.zrelay_guarded = True  # type: ignore[attr-defined]
    SSHLogger.log = guarded  # type: ignore[method-assign]
