"""``inventory graph --json`` and ``inventory validate --json``: the same answers as the text, as data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zrelay.cli.main import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example.yml"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def flatten(node: dict, depth: int = 0) -> list[str]:
    """The tree back as ``graph``'s text lines, to compare both outputs."""
    pad = "  |" * depth
    lines = [f"{pad}--@{node['name']}:" if depth else f"@{node['name']}:"]
    for child in node["children"]:
        lines += flatten(child, depth + 1)
    lines += [f"{pad}  |--{h}" for h in node["hosts"]]
    return lines


@pytest.mark.parametrize("group", ["all", "storage"])
def test_graph_json_is_the_graph(capsys: pytest.CaptureFixture[str], group: str) -> None:
    code, text, _ = run(capsys, "-i", str(EXAMPLE), "inventory", "graph", group)
    assert code == 0
    code, out, err = run(capsys, "-i", str(EXAMPLE), "inventory", "graph", group, "--json")
    assert code == 0 and not err
    tree = json.loads(out)
    assert tree["name"] == group and tree["cycle"] is False
    assert flatten(tree) == text.splitlines()
    if group == "all":
        storage = next(c for c in tree["children"] if c["name"] == "storage")
        assert storage["hosts"] == ["nas1", "nas2"] and storage["children"][0]["name"] == "lab"


def test_graph_json_unknown_group_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-i", str(EXAMPLE), "inventory", "graph", "storag", "--json")
    assert code == 2 and not out and "no group 'storag'" in err and "Traceback" not in err


def test_validate_json_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-i", str(EXAMPLE), "inventory", "validate", "--json")
    assert code == 0 and not err
    data = json.loads(out)
    assert data == {"inventory": str(EXAMPLE), "ok": True, "problems": [],
                    "summary": {"hosts": 5, "groups": 3, "jobs": 3, "s3_targets": 1, "files": 1}}


def test_validate_json_lists_every_problem(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "inv.yml"
    bad.write_text("all:\n  hosts:\n    a: {port: x}\n    b: {sudo: maybe}\n")
    code, text, _ = run(capsys, "-i", str(bad), "inventory", "validate")
    code_json, out, err = run(capsys, "-i", str(bad), "inventory", "validate", "--json")
    assert code == code_json == 2 and not err
    data = json.loads(out)
    assert data["ok"] is False and data["summary"] is None and data["inventory"] == str(bad)
    assert [p["text"] for p in data["problems"]] == text.splitlines()
    first = data["problems"][0]
    assert (first["file"], first["line"], first["column"]) == (str(bad), 3, 15) and "port" in first["message"]
    assert len(data["problems"]) == 2


def test_help_documents_the_json(capsys: pytest.CaptureFixture[str]) -> None:
    for command, key in (("graph", '"children"'), ("validate", '"problems"')):
        with pytest.raises(SystemExit):
            main(["inventory", command, "--help"])
        help_text = " ".join(capsys.readouterr().out.split())
        assert "--json" in help_text and key in help_text, help_text
