"""The one quoting function: argvs become shell text only in zrelay.zfs.quoting."""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest

from zrelay.zfs import quoting

T1 = "tank/data@zrelay_2026-11-22T10:00:00Z"
AGE_KEY = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
PACKAGE = Path(quoting.__file__).resolve().parents[1]


def test_quote_plain_and_spaces() -> None:
    assert quoting.quote([]) == ""
    assert quoting.quote(["zfs", "list", "tank/data"]) == "zfs list tank/data"
    assert quoting.quote(["zfs", "send", "tank/with space@snap one"]) == "zfs send 'tank/with space@snap one'"
    assert shlex.split(quoting.quote(["a b", "c'd", ""])) == ["a b", "c'd", ""]


def test_remote_command_sudo() -> None:
    assert quoting.remote_command(["zfs", "list"]) == "zfs list"
    assert quoting.remote_command(["zfs", "list"], sudo=True) == "sudo -n zfs list"


def test_pipeline_sudo_only_on_zfs_stages() -> None:
    line = quoting.pipeline(["zfs", "send", T1], ["head", "-c", "10"], ["zfs", "receive", "-u", "b/x"],
                            sudo=True)
    assert line == f"sudo -n zfs send {T1} | head -c 10 | sudo -n zfs receive -u b/x"
    assert quoting.pipeline(["zfs", "send", T1], ["zfs", "receive", "b/x"]) == f"zfs send {T1} | zfs receive b/x"
    with pytest.raises(ValueError):
        quoting.pipeline()


def test_guarded_pipeline_reports_every_stage_but_the_last() -> None:
    line = quoting.guarded_pipeline(["zfs", "send", T1], ["zstd", "-c"], ["age", "-e", "-r", AGE_KEY], sudo=True)
    assert line == (f'{{ sudo -n zfs send {T1}; echo "zrelay-stage 1 exit $?" >&2; }} | '
                    '{ zstd -c; echo "zrelay-stage 2 exit $?" >&2; } | '
                    f"age -e -r {AGE_KEY}")
    assert quoting.guarded_pipeline(["zfs", "receive", "b/x"]) == "zfs receive b/x"
    with pytest.raises(ValueError):
        quoting.guarded_pipeline()


def test_guarded_pipeline_numbers_stages_from_first_stage() -> None:
    """A target-side pipeline inside a direct stream numbers its stages apart from the source's."""
    line = quoting.guarded_pipeline(["mbuffer", "-q"], ["zstd", "-d"], ["zfs", "receive", "b/x"],
                                    sudo=True, first_stage=101)
    assert line == ('{ mbuffer -q; echo "zrelay-stage 101 exit $?" >&2; } | '
                    '{ zstd -d; echo "zrelay-stage 102 exit $?" >&2; } | sudo -n zfs receive b/x')


def _shell_text_calls(tree: ast.AST) -> list[int]:
    """Lines that turn words into shell text: shlex.join / shlex.quote, however imported."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("join", "quote") and \
                isinstance(node.value, ast.Name) and node.value.id == "shlex":
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "shlex" and \
                any(a.name in ("join", "quote") for a in node.names):
            lines.append(node.lineno)
    return lines


def test_no_module_but_quoting_makes_shell_text() -> None:
    """Every other module builds argvs and leaves the quoting to zrelay.zfs.quoting."""
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{line}"
                 for path in sorted(PACKAGE.rglob("*.py")) if path.name != "quoting.py" or path.parent.name != "zfs"
                 for line in _shell_text_calls(ast.parse(path.read_text(), str(path)))]
    assert offenders == []
    assert _shell_text_calls(ast.parse(Path(quoting.__file__).read_text()))  # the scan does see quoting's own
