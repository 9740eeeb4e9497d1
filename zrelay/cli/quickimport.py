"""Third-party imports of the command line without import-time work it never uses.

``import yaml`` compiles, in ``yaml.reader``, a regular expression of every non-printable
Unicode character: 20 ms of each zrelay start-up on the lab machine (a fifth of the whole
yaml import, as much as reading a small inventory). Only PyYAML's pure-Python reader uses it,
and zrelay reads inventories with the C parser (libyaml) wherever PyYAML has one. Here that
one pattern is compiled on its first use instead: where the pure-Python reader does run
(a PyYAML without libyaml), it behaves exactly as before.
"""

from __future__ import annotations

import re
import sys
from typing import Any

#: ``yaml.reader.Reader.NON_PRINTABLE``'s pattern, as PyYAML 5.1 and later write it.
YAML_NON_PRINTABLE = "[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010ffff]"


class LazyPattern:
    """A compiled regular expression that is compiled when first used."""

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self._args = (pattern, flags)
        self._compiled: re.Pattern[str] | None = None

    def __getattr__(self, name: str) -> Any:
        if self._compiled is None:
            self._compiled = re.compile(*self._args)
        return getattr(self._compiled, name)


def import_yaml() -> None:
    """``import yaml``, with ``NON_PRINTABLE`` compiled on first use (see the module's docstring)."""
    if "yaml" in sys.modules:
        return
    real_compile = re.compile

    def compile_lazily(pattern: Any, flags: int = 0) -> Any:
        if pattern == YAML_NON_PRINTABLE:
            return LazyPattern(pattern, flags)
        return real_compile(pattern, flags)

    re.compile = compile_lazily
    try:
        import yaml  # noqa: F401
    finally:
        re.compile = real_compile
