"""A file name that is not UTF-8 must not break the audit log (it is recorded as a readable escape)."""

import json
import os
from pathlib import Path

from tests.conftest import Cli


def test_non_utf8_file_names_are_audited(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (Path(os.fsdecode(bytes(src) + b"/\xff\xfe.bin"))).write_bytes(b"odd name")
    assert cli("init").code == 0
    assert cli("commit", str(src)).code == 0
    res = cli("ls", "main", os.fsdecode(b"\xff\xfe.bin"))
    assert res.code == 0, res.err
    events = [json.loads(line) for line in cli("audit", "export", "--format", "jsonl").out.splitlines()]
    ls_events = [e for e in events if e["action"] == "ls"]
    assert ls_events and "\\xff\\xfe.bin" in json.dumps(ls_events[-1], ensure_ascii=False).replace("\\\\", "\\")
    assert cli("audit", "verify").code == 0
