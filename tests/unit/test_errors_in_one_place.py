"""Every exception class of zrelay lives in zrelay/errors.py, so the hierarchy (and which exit code
each error owns) can be read in one file; the few that must live elsewhere are listed here, with why."""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
from pathlib import Path

import zrelay
from zrelay import errors

PACKAGE = Path(zrelay.__file__).parent

#: Exception classes allowed outside errors.py: (module path relative to zrelay/, class name) → why.
#: Each is an internal signal between a value check and its caller, which adds the location the
#: check cannot know and re-raises an errors.py class; none reaches a user as itself, and none
#: should be mistaken for one (errors.py promises that every class there can be shown as is).
ALLOWED: dict[tuple[str, str], str] = {
    # The loader's value checks raise it; the loader turns it into an InventoryError at
    # file:line:column (and ``key``/``in_name`` pick the mapping entry to point at).
    ("inventory/values.py", "Bad"):
        "a value check's failure, re-raised by the loader as InventoryError with its location",
    # expand_range is shared by the loader and `zrelay inventory add/remove-host`: the first
    # re-raises it as InventoryError at the host's line, the second as UsageError naming the
    # argument, and one lookup takes it to mean "not a range this host is part of".
    ("inventory/ansible.py", "RangeError"):
        "a host range that cannot be expanded; each caller re-raises it with its location",
    # convert_ssh_option knows the option, not where it was written: the loader re-raises it
    # at the entry's file:line:column, the transport as a UsageError naming the host.
    ("inventory/ssh_options.py", "SshOptionError"):
        "an ssh option asyncssh cannot take; each caller re-raises it naming the host or file:line:column",
}

_BUILTIN_EXCEPTIONS = {name for name in dir(builtins)
                       if isinstance(getattr(builtins, name), type)
                       and issubclass(getattr(builtins, name), BaseException)}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_exception(base: ast.expr, namespace: dict[str, object], known: set[str]) -> bool:
    """True when the base class expression names an exception class: evaluated in the module's
    namespace where it can be (module-level names, ``asyncssh.Error``), by name otherwise (a base
    defined inside a function)."""
    try:
        value = eval(compile(ast.Expression(base), "<base>", "eval"), dict(namespace))  # noqa: S307
    except Exception:  # noqa: BLE001  (a name only a function's scope defines)
        name = ast.unparse(base).rsplit(".", 1)[-1]
        return name in known or name in _BUILTIN_EXCEPTIONS
    return isinstance(value, type) and issubclass(value, BaseException)


def exception_names(tree: ast.Module, namespace: dict[str, object]) -> set[str]:
    """Names of the exception classes ``tree`` defines, at any depth (inside a function too)."""
    classes = [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    known: set[str] = set()
    changed = True
    while changed:   # a class deriving from one found in the same file, in any order
        changed = False
        for node in classes:
            if node.name not in known and any(_is_exception(b, namespace, known) for b in node.bases):
                known.add(node.name)
                changed = True
    return known


@functools.cache
def exception_classes_outside_errors() -> frozenset[tuple[str, str]]:
    """(path relative to zrelay/, class name) of every exception class defined outside errors.py."""
    found: set[tuple[str, str]] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == "errors.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        if not any(isinstance(node, ast.ClassDef) for node in ast.walk(tree)):
            continue
        namespace = vars(importlib.import_module(_module_name(path)))
        found.update((relative, name) for name in exception_names(tree, namespace))
    return frozenset(found)


def test_exception_classes_are_defined_in_errors_py() -> None:
    outside = exception_classes_outside_errors()
    stray = sorted(outside - ALLOWED.keys())
    assert not stray, ("exception classes defined outside zrelay/errors.py (move them there, with the exit "
                       f"code they should own, or justify them in ALLOWED): {stray}")


def test_the_allow_list_names_only_classes_that_exist() -> None:
    """An entry whose class moved or went away is removed, so the list stays a list of exceptions."""
    assert not ALLOWED.keys() - exception_classes_outside_errors()


def test_the_scan_finds_exception_classes_at_any_depth(tmp_path: Path) -> None:
    """The scan itself: a module-level subclass of a builtin, of a zrelay error, of a class from
    the same file, and one inside a function are all found; a plain class is not."""
    source = ("from zrelay.errors import ZrelayError\n"
              "class A(ValueError): pass\n"
              "class C(B): pass\n"
              "class B(ZrelayError): pass\n"
              "class Plain: pass\n"
              "def f():\n"
              "    class Inner(KeyError): pass\n"
              "    class Deeper(Inner): pass\n")
    tree = ast.parse(source)
    namespace: dict[str, object] = {"ZrelayError": errors.ZrelayError}   # as the module would hold it
    assert exception_names(tree, namespace) == {"A", "B", "C", "Inner", "Deeper"}


def test_moved_errors_keep_their_exit_codes_and_bases() -> None:
    """What callers relied on before the move: the exit code a run ends with, and the builtin
    base that ``except ValueError`` sites catch."""
    assert errors.TargetBusy("t", None).exit_code == errors.EXIT_BUSY == 75
    for cls in (errors.ManifestError, errors.RestoreRefused, errors.StateError, errors.ShellBroken):
        assert issubclass(cls, errors.ZrelayError) and cls.exit_code == errors.EXIT_JOB_FAILED
    assert issubclass(errors.ManifestError, ValueError) and issubclass(errors.RestoreRefused, ValueError)
    assert issubclass(errors.NewestNotRestorable, errors.RestoreRefused)
    assert str(errors.ShellBroken(sent=True)) == "command shell closed"
