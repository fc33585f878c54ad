"""audit log/tail/verify/prove/consistency/check-proof/key/export/rebuild, and custody."""

from __future__ import annotations

import contextlib
import html
import json
import os
import sys
from typing import Annotated, Any

import typer

from strongroom.cli.main import STATE, session
from strongroom.cli.render import emit_json, is_tty, line, note, safe, table
from strongroom.errors import AuditLogTampered, AuditLogTruncated, InputError
from strongroom.service import audit as svc

audit_app = typer.Typer(help="The tamper-evident audit log of every operation.", no_args_is_help=True)


def _row(e: Any) -> list[str]:
    t = e.targets
    what = " ".join(
        x
        for x in (
            f"branch={t['branch']}" if t.get("branch") else "",
            f"version={str(t['version'])[:12]}" if t.get("version") else "",
            ("paths=" + ",".join(safe(p) for p in e.paths)) if e.paths else "",
        )
        if x
    )
    return [str(e.seq), e.time, e.actor, e.host, e.action, e.outcome, what]


def _show_events(events: list[Any]) -> None:
    if STATE.json:
        emit_json([e.to_json() for e in events])
        return
    table(["seq", "time", "actor", "host", "action", "outcome", "targets"], [_row(e) for e in events])


@audit_app.command("log")
def log_cmd(
    actor: Annotated[str | None, typer.Option("--actor", help="Only events of this user.")] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="Only this action (`branch` matches branch.*).")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="RFC 3339 time or date (UTC if no offset).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="RFC 3339 time or date, exclusive.")] = None,
    path: Annotated[str | None, typer.Option("--path", help="Only events naming a path matching GLOB.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Events of the audit log, oldest first."""
    STATE.json = STATE.json or json_out
    _show_events(svc.log(session(), actor, action, since, until, path))


@audit_app.command("tail")
def tail_cmd(
    lines: Annotated[int, typer.Option("-n", "--lines", help="How many of the newest events.")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")] = False,
) -> None:
    """The newest events; with --follow, then every new one as it is appended."""
    events = svc.tail(session(), lines)
    if follow:
        last = events[-1].seq if events else -1
        for e in events:
            line(json.dumps(e.to_json(), ensure_ascii=False) if STATE.json else "\t".join(_row(e)))
        try:
            for e in svc.follow(session(), last):
                line(json.dumps(e.to_json(), ensure_ascii=False) if STATE.json else "\t".join(_row(e)))
                sys.stdout.flush()
        except KeyboardInterrupt:
            return
        return
    _show_events(events)


@audit_app.command("verify")
def verify_cmd() -> None:
    """Recompute the tree from the events and check every checkpoint; exit 1 naming the first bad seq."""
    rep = svc.verify(session())
    if STATE.json:
        emit_json(rep.to_json())
    else:
        for w in rep.warnings:
            note(f"warning: {w}")
        for log_id, size in sorted(rep.other_logs.items()):
            note(f"note: the repository also holds log {log_id} ({size} events; another catalog or client)")
        if rep.ok:
            line(
                f"audit log ok: {rep.events} events, {rep.covered} covered by signed checkpoints "
                f"({rep.checkpoints_catalog} in the catalog, {rep.checkpoints_repository} in the repository), "
                f"{rep.seconds:.2f}s"
            )
    if not rep.ok:
        raise (AuditLogTruncated if rep.truncated else AuditLogTampered)(rep.first_bad, rep.reason)


@audit_app.command("prove")
def prove_cmd(seq: Annotated[int, typer.Argument(help="Sequence number (leaf index) of the event.")]) -> None:
    """An inclusion proof of event SEQ under the latest signed checkpoint, as one JSON document."""
    emit_json(svc.prove(session(), seq))


@audit_app.command("consistency")
def consistency_cmd(old_size: Annotated[int, typer.Argument()], new_size: Annotated[int, typer.Argument()]) -> None:
    """A consistency proof from tree size OLD_SIZE to the checkpoint of size NEW_SIZE (one JSON document)."""
    emit_json(svc.consistency(session(), old_size, new_size))


@audit_app.command("check-proof")
def check_proof_cmd(
    file: Annotated[
        str, typer.Argument(help="A document printed by `audit prove` or `audit consistency` (- reads stdin).")
    ],
    key: Annotated[
        str | None, typer.Option("--key", help="Verifier key text (or a file holding it), as `audit key` prints.")
    ] = None,
) -> None:
    """Verify a proof offline, with the repository's log key or the one given."""
    try:
        text = sys.stdin.read() if file == "-" else open(file, encoding="utf-8").read()  # noqa: SIM115
        doc = json.loads(text)
    except OSError as e:
        raise InputError(f"cannot read {file}: {e.strerror}") from None
    except ValueError:
        raise InputError(f"{file} is not JSON") from None
    if not isinstance(doc, dict):
        raise InputError(f"{file} is not a proof document")
    what = svc.check_proof_doc(session(), doc, key)
    emit_json({"ok": True, "proves": what}) if STATE.json else line(f"ok: {what}")


@audit_app.command("key")
def key_cmd() -> None:
    """Print the verifier key of the repository's log (for `audit check-proof --key` elsewhere)."""
    line(svc.log_key(session()))


@audit_app.command("export")
def export_cmd(
    fmt: Annotated[str, typer.Option("--format", help="jsonl: one event per line, for a SIEM.")] = "jsonl",
    since: Annotated[str | None, typer.Option("--since", help="RFC 3339 time or date.")] = None,
) -> None:
    """Every event (since a time) as JSON lines."""
    out = sys.stdout
    for e in svc.export(session(), fmt, since):
        out.write(json.dumps(e.to_json(), ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n")


@audit_app.command("rebuild")
def rebuild_cmd(
    log_id: Annotated[
        str | None,
        typer.Option("--log", help="Which log of the repository (default: this catalog's, else the longest)."),
    ] = None,
) -> None:
    """Recreate the catalog from the events and checkpoints sealed in the repository."""
    res = svc.rebuild(session(), log_id)
    if STATE.json:
        emit_json(res)
    else:
        line(f"rebuilt log {res['log_id']}: {res['events']} events, {res['checkpoints']} checkpoints")


def custody(
    version: Annotated[str | None, typer.Argument(help="Version: id, prefix, branch, tag or BRANCH~N.")] = None,
    paths: Annotated[list[str] | None, typer.Argument(help="Paths relative to the version's root.")] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Everything this user touched.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    html_file: Annotated[str | None, typer.Option("--html", help="Write an HTML report to FILE.")] = None,
) -> None:
    """Chain of custody: who added and changed each file of VERSION, from where, and who read it since."""
    if html_file:
        svc.check_report_destination(session(), html_file)
    rep = svc.custody(session(), version, paths or [], actor)
    if html_file:
        _write_report(html_file, _html(rep))
        note(f"wrote {safe(html_file)}")
    if STATE.json or json_out:
        emit_json(rep)
        return
    if html_file:
        return
    if "events" in rep:
        _show_events([_Ev(e) for e in rep["events"]])
        return
    for f in rep["files"]:
        line(f"{safe(f['path'])} ({f['size']} bytes)")
        rows = [
            [h["time"], h["change"], h["version"][:12], h["author"], h["host"], safe(h["source"])] for h in f["history"]
        ] + [
            [r["time"], _read_label(r), r["version"][:12], r["actor"], r["host"], f"seq {r['seq']}"] for r in f["reads"]
        ]
        if is_tty():
            table(["time", "what", "version", "who", "host", "source / event"], rows)
        else:
            for r in rows:
                line("\t" + "\t".join(str(c) for c in r))


class _Ev:
    def __init__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self._d = d

    @property
    def paths(self) -> list[str]:
        return list(self._d.get("targets", {}).get("paths") or [])

    def to_json(self) -> dict[str, Any]:
        return self._d


def _read_label(r: dict[str, Any]) -> str:
    """A read that did not end well may still have delivered part of the data: say so beside it."""
    return f"read:{r['action']}" + ("" if r.get("outcome", "ok") == "ok" else f" ({r['outcome']}, partial?)")


def _write_report(path: str, text: str) -> None:
    """Written whole or not at all (temporary file, then rename); undecodable names are escaped."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise InputError(f"cannot write {path}: {e.strerror or e}") from None


def _html(rep: dict[str, Any]) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>strongroom custody report</title>",
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;"
        "padding:2px 6px;font-size:90%}</style></head><body>",
    ]
    if "events" in rep:
        parts.append(f"<h1>Everything {e(rep['actor'])} touched</h1><table><tr>")
        parts.append("".join(f"<th>{h}</th>" for h in ("seq", "time", "host", "action", "outcome", "targets")))
        parts.append("</tr>")
        for ev in rep["events"]:
            cells = (ev["seq"], ev["time"], ev["host"], ev["action"], ev["outcome"], json.dumps(ev["targets"]))
            parts.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
    else:
        parts.append(f"<h1>Chain of custody of version {e(rep['version'])}</h1>")
        for f in rep["files"]:
            parts.append(f"<h2>{e(f['path'])} ({f['size']} bytes)</h2><table><tr>")
            parts.append("".join(f"<th>{h}</th>" for h in ("time", "what", "version", "who", "host", "source")))
            parts.append("</tr>")
            for h in f["history"]:
                cells = (h["time"], h["change"], h["version"], h["author"], h["host"], h["source"])
                parts.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in cells) + "</tr>")
            for r in f["reads"]:
                cells = (r["time"], _read_label(r), r["version"], r["actor"], r["host"], f"event {r['seq']}")
                parts.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in cells) + "</tr>")
            parts.append("</table>")
    parts.append("</body></html>\n")
    return "".join(parts)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
    app.command()(custody)
