"""What the command line imports on its way to work: nothing it never uses, and the same behaviour.

Each check runs in a fresh interpreter, since what matters is what a new ``zrelay`` process loads.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def fresh(code: str) -> dict[str, object]:
    """Run ``code`` in a new interpreter with this checkout first; it prints one JSON value."""
    r = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r})\n{code}"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


@pytest.mark.skipif(importlib.util.find_spec("OpenSSL") is not None,
                    reason="pyOpenSSL is installed: asyncssh's X.509 support is real and is imported")
def test_sync_command_does_not_import_cryptography_x509_that_asyncssh_cannot_use() -> None:
    got = fresh("import json, zrelay.cli.main as m; m.build_parser('sync')\n"
                "import asyncssh.public_key, asyncssh.known_hosts\n"
                "print(json.dumps({'x509': 'cryptography.x509' in sys.modules,\n"
                "                  'keys': asyncssh.public_key._x509_available,\n"
                "                  'known_hosts': asyncssh.known_hosts._x509_available}))")
    assert got == {"x509": False, "keys": False, "known_hosts": False}


def test_asyncssh_without_the_skip_has_no_x509_either_when_pyopenssl_is_missing() -> None:
    """The skip changes nothing asyncssh can do: imported plainly, its X.509 support is off too."""
    got = fresh("import json, asyncssh.public_key\n"
                "print(json.dumps({'keys': asyncssh.public_key._x509_available}))")
    assert got == {"keys": importlib.util.find_spec("OpenSSL") is not None}


def test_x509_is_left_alone_when_asyncssh_is_already_imported() -> None:
    got = fresh("import json, asyncssh\nfrom zrelay.transport import sshlib\n"
                "print(json.dumps({'marked': sshlib.skip_x509_without_pyopenssl()}))")
    assert got == {"marked": False}


def test_cli_compiles_yamls_non_printable_pattern_only_when_used() -> None:
    got = fresh("import json, zrelay.cli.main\nimport yaml.reader\n"
                "print(json.dumps({'lazy': type(yaml.reader.Reader.NON_PRINTABLE).__name__}))")
    assert got == {"lazy": "LazyPattern"}


def test_pyyamls_pure_python_reader_still_refuses_non_printable_characters() -> None:
    got = fresh("import json, zrelay.cli.main\nimport yaml\n"
                "try:\n    yaml.load('a: b\\x07', Loader=yaml.SafeLoader)\n    out = 'loaded'\n"
                "except yaml.reader.ReaderError as exc:\n    out = str(exc).splitlines()[0]\n"
                "ok = yaml.load('a: b', Loader=yaml.SafeLoader)\n"
                "print(json.dumps({'bad': out, 'ok': ok}))")
    assert got == {"bad": "unacceptable character #x0007: special characters are not allowed", "ok": {"a": "b"}}


def test_lazy_pattern_is_the_pattern() -> None:
    from zrelay.cli.quickimport import YAML_NON_PRINTABLE, LazyPattern

    lazy = LazyPattern(YAML_NON_PRINTABLE)
    assert lazy.search("plain text") is None
    found = lazy.search("ok\x00")
    assert found is not None and found.start() == 2
    assert lazy.pattern == YAML_NON_PRINTABLE
