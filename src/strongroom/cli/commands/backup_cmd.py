"""remote add/list, backup push/list/verify/restore, incident open/list/close."""

from __future__ import annotations

from typing import Annotated

import typer

from strongroom.cli.main import STATE, session
from strongroom.cli.render import damage, emit_json, human_bytes, line, note, safe, table
from strongroom.errors import InputError
from strongroom.service import backup as svc
from strongroom.service.results import iso

remote_app = typer.Typer(
    help="Offsite S3 remotes (settings only; credentials come from boto3's chain).", no_args_is_help=True
)
backup_app = typer.Typer(help="Offsite backup to S3 with Object Lock.", no_args_is_help=True)
incident_app = typer.Typer(help="Incidents: while one is open, backup push refuses.", no_args_is_help=True)


def remote_add(
    name: Annotated[str, typer.Argument(help="A short name for the remote.")],
    url: Annotated[str, typer.Argument(help="s3://BUCKET/PREFIX")],
    endpoint: Annotated[str | None, typer.Option(help="S3 endpoint URL (MinIO, Ceph, a local server).")] = None,
    region: Annotated[str | None, typer.Option(help="S3 region.")] = None,
    lock: Annotated[str | None, typer.Option("--lock", help="Object Lock mode: governance or compliance.")] = None,
    retain_days: Annotated[int, typer.Option(help="Object Lock retention of every object, in days (≤ 36500).")] = 0,
    max_retain_days: Annotated[int, typer.Option(help="Refuse retention above this many days (≤ 36500).")] = 3650,
    push_profile: Annotated[str | None, typer.Option(help="AWS profile for push, list, verify, restore.")] = None,
    legal_hold_profile: Annotated[
        str | None, typer.Option(help="AWS profile for legal holds (backup release --legal-hold).")
    ] = None,
    delete_profile: Annotated[str | None, typer.Option(help="AWS profile for deletes (backup prune).")] = None,
) -> None:
    """Add a remote after checking that its bucket has versioning (and Object Lock with --lock)."""
    if lock is not None and lock.lower() not in ("governance", "compliance"):
        raise InputError("--lock takes governance or compliance")
    res = svc.remote_add(
        session(),
        name,
        url,
        endpoint,
        region,
        lock,
        retain_days,
        max_retain_days,
        push_profile,
        legal_hold_profile,
        delete_profile,
    )
    if STATE.json:
        emit_json(res)
        return
    line(f"added remote {res.name}: {res.url}")
    note(f"bucket: {res.bucket}; " + (f"{res.lock} retention {res.retain_days} days" if res.lock else "no retention"))


def remote_set(
    name: Annotated[str, typer.Argument(help="Remote name.")],
    push_profile: Annotated[str | None, typer.Option(help="AWS profile for push, list, verify, restore.")] = None,
    legal_hold_profile: Annotated[str | None, typer.Option(help="AWS profile for legal holds.")] = None,
    delete_profile: Annotated[str | None, typer.Option(help="AWS profile for deletes (backup prune).")] = None,
) -> None:
    """Name the AWS profile (from the AWS config files) each role of a remote uses; never credentials."""
    res = svc.remote_set(session(), name, push_profile, legal_hold_profile, delete_profile)
    if STATE.json:
        emit_json(res)
        return
    line(
        f"remote {res.name}: push profile {res.push_profile or '(default chain)'}, legal-hold profile "
        f"{res.legal_hold_profile or '(none)'}, delete profile {res.delete_profile or '(none)'}"
    )


def remote_list() -> None:
    """Remotes known to this client."""
    rows = svc.remote_list(session())
    if STATE.json:
        emit_json(rows)
        return
    table(
        ["name", "location", "endpoint", "lock", "retain days", "max days"],
        [[r.name, r.url, r.endpoint or "", r.lock or "-", r.retain_days, r.max_retain_days] for r in rows],
    )


def push(
    name: Annotated[str, typer.Argument(help="Remote name.")],
    workers: Annotated[int, typer.Option(help="Uploads in parallel.")] = 8,
    force: Annotated[bool, typer.Option("--force", help="Refused while an incident is open.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="List the bucket and upload again what it lost (one listing).")
    ] = False,
) -> None:
    """Upload what the bucket lacks, with retention, then a signed manifest (written last)."""
    if not 1 <= workers <= 64:
        raise InputError("--workers takes 1 to 64")
    res = svc.push(session(), name, workers, check)  # --force changes nothing: an open incident still refuses
    if STATE.json:
        emit_json(svc.as_json(res))
        return
    for s in res.skipped_manifests:
        note(f"warning: skipped a manifest version that does not verify: {s}")
    if res.up_to_date:
        line(f"up to date: {res.objects} objects ({human_bytes(res.total_bytes)}) in the bucket; nothing sent")
    else:
        line(
            f"pushed {res.uploaded} objects ({human_bytes(res.bytes_sent)} sent), {res.resumed} resumed, "
            f"{res.extended} retentions extended"
            + (f", {res.healed} lost from the bucket and uploaded again" if res.healed else "")
            + f"; manifest version {res.manifest_version}"
        )
    note(f"{res.objects} objects, {human_bytes(res.total_bytes)} in the backup; {res.seconds:.2f}s")


def backup_list(name: Annotated[str, typer.Argument(help="Remote name.")]) -> None:
    """Every manifest version in the bucket, newest first; those that do not verify are marked."""
    rows = svc.backup_list(session(), name)
    if STATE.json:
        emit_json(rows)
        return
    table(
        ["manifest version", "written", "created", "objects", "bytes", "status"],
        [
            [r.version_id, r.modified, r.created, r.objects, r.bytes, "ok" if r.valid else f"BAD: {r.reason}"]
            for r in rows
        ],
    )


def verify(
    name: Annotated[str, typer.Argument(help="Remote name.")],
    sample: Annotated[str | None, typer.Option(help="PERCENT% or slice n/t of the packs.")] = None,
) -> None:
    """Restore drill: download the pinned versions, check hashes, decrypt and re-hash; exit 1 on damage."""
    res = svc.verify(session(), name, sample)
    if STATE.json:
        emit_json(svc.as_json(res))
    else:
        for s in res.skipped_manifests:
            note(f"warning: skipped a manifest version that does not verify: {s}")
        for s in res.manifest_warnings:
            note(f"warning: {s}")
        damage(res.damage, res.affected)
        for d in res.unread:
            line(f"unread\t{safe(d['object'])}\t{d['reason']}")
        rate = res.bytes_checked / res.seconds / 1e6 if res.seconds else 0.0
        verdict = "ok" if res.ok else "DAMAGED" if res.damage else "INCOMPLETE (the bucket did not serve everything)"
        note(
            f"backup verify ({res.mode}): {verdict}; manifest {res.manifest_version} of "
            f"{iso(res.manifest_created_ns)}, {res.versions} versions, {res.packs_checked} packs, "
            f"{human_bytes(res.bytes_checked)} in {res.seconds:.2f}s ({rate:.1f} MB/s)"
        )
    if not res.ok:  # 1: damage found; 2: no damage found, but the bucket did not serve every object
        raise typer.Exit(1 if res.damage else 2)


def restore(
    source: Annotated[str, typer.Argument(help="Remote name or s3://BUCKET/PREFIX.")],
    to: Annotated[str, typer.Option("--to", help="New repository folder (must not exist or be empty).")],
    endpoint: Annotated[str | None, typer.Option(help="S3 endpoint URL.")] = None,
    region: Annotated[str | None, typer.Option(help="S3 region.")] = None,
    version: Annotated[
        str | None, typer.Option(help="Restore only what this version (id, prefix, branch or tag) needs.")
    ] = None,
) -> None:
    """Rebuild a repository from the bucket alone (the passphrase is all it needs)."""
    res = svc.restore(session(), source, to, endpoint, region, version)
    if STATE.json:
        emit_json(svc.as_json(res))
        return
    for s in res.skipped_manifests:
        note(f"warning: skipped a manifest version that does not verify: {s}")
    for s in res.manifest_warnings:
        note(f"warning: {s}")
    what = f"version {getattr(res, 'version', '')[:16]} with " if version else ""
    line(
        f"restored repository {res.repo_id[:16]} to {safe(to)}: {what}{res.versions} versions, {res.objects} objects "
        f"({human_bytes(res.bytes)}) from manifest {res.manifest_version}"
    )
    if version:
        note(
            "note: this copy has refs of its own (one version); open it with its own STRONGROOM_STATE_DIR, or "
            "this client's rollback check will flag whichever of the copy and the original it opens second"
        )


def release(
    name: Annotated[str, typer.Argument(help="Remote name.")],
    version: Annotated[str, typer.Argument(help="Version: id, prefix, branch or tag.")],
    retain_days: Annotated[int | None, typer.Option(help="Extend retention to now + N days (never shortens).")] = None,
    legal_hold: Annotated[
        bool, typer.Option("--legal-hold", help="Set a legal hold (uses the remote's legal-hold profile).")
    ] = False,
) -> None:
    """Lock every object a version needs in the bucket: retention extended and/or a legal hold."""
    res = svc.release(session(), name, version, retain_days, legal_hold)
    if STATE.json:
        emit_json(svc.as_json(res))
        return
    for s in res.manifest_warnings:
        note(f"warning: {s}")
    what = [f"retained until {res.retain_until}"] if res.retain_until else []
    what += ["legal hold on"] if res.legal_hold else []
    line(
        f"released version {res.version[:16]}: {res.objects} objects ({human_bytes(res.bytes)}), "
        f"{', '.join(what)}; manifest version {res.manifest_version}"
    )
    note(f"{res.extended} retentions extended in {res.seconds:.2f}s")


def prune(
    name: Annotated[str, typer.Argument(help="Remote name.")],
    keep_last: Annotated[int | None, typer.Option(help="Keep the newest N backups.")] = None,
    keep_within: Annotated[int | None, typer.Option(help="Keep the backups made within DAYS days.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be deleted; delete nothing.")] = False,
) -> None:
    """Delete what no kept backup needs once its retention has passed (uses the remote's delete profile)."""
    res = svc.prune(session(), name, keep_last, keep_within, dry_run)
    if STATE.json:
        emit_json(svc.as_json(res))
        return
    if res.kept_everything:
        note(
            f"warning: deleted nothing: {len(res.unopened_manifests)} manifest versions in this prefix do not open "
            "with this repository's key (another repository's backup, a newer format, or garbage), so what they "
            "need is unknown; remove them by hand once you know what they are: " + ", ".join(res.unopened_manifests[:5])
        )
    line(
        f"{'would delete' if res.dry_run else 'deleted'} {res.deleted} object versions "
        f"({human_bytes(res.deleted_bytes)}); kept {res.kept_manifests} of {res.manifests} backups"
    )
    note(
        f"not deleted: {res.locked} still under retention, {res.held} under legal hold, {res.young} younger "
        f"than a day; {res.bad_manifests} manifest versions that do not verify; {res.seconds:.2f}s"
    )


def incident_open(reason: Annotated[str, typer.Option("--reason", help="What was detected.")]) -> None:
    """Open an incident: backup push refuses until it is closed."""
    inc = svc.incident_open(session(), reason)
    if STATE.json:
        emit_json(svc.as_json(inc))
    else:
        line(f"opened incident {inc.id}")


def incident_list() -> None:
    """Every incident, open and closed."""
    items = svc.incident_list(session())
    if STATE.json:
        emit_json([svc.as_json(i) for i in items])
        return
    table(
        ["id", "opened", "closed", "reason"],
        [[i.id, iso(i.opened_ns), iso(i.closed_ns) if i.closed_ns else "OPEN", safe(i.reason)] for i in items],
    )


def incident_close(incident_id: Annotated[str, typer.Argument(help="Incident id.")]) -> None:
    """Close an incident; backup push works again once none is open."""
    inc = svc.incident_close(session(), incident_id)
    line(f"closed incident {inc.id}")


def register(app: typer.Typer) -> None:
    remote_app.command("add")(remote_add)
    remote_app.command("list")(remote_list)
    remote_app.command("set")(remote_set)
    backup_app.command("push")(push)
    backup_app.command("list")(backup_list)
    backup_app.command("verify")(verify)
    backup_app.command("restore")(restore)
    backup_app.command("release")(release)
    backup_app.command("prune")(prune)
    incident_app.command("open")(incident_open)
    incident_app.command("list")(incident_list)
    incident_app.command("close")(incident_close)
    app.add_typer(remote_app, name="remote")
    app.add_typer(backup_app, name="backup")
    app.add_typer(incident_app, name="incident")
