"""The catalog skips alembic when the schema is at HEAD_REVISION: that constant must name the newest migration."""

from importlib import resources

from alembic.config import Config
from alembic.script import ScriptDirectory

from strongroom.catalog import db


def test_head_revision_names_the_newest_migration() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("strongroom.catalog") / "migrations"))
    assert ScriptDirectory.from_config(cfg).get_heads() == [db.HEAD_REVISION]


def test_a_current_catalog_is_not_migrated_again(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = db.make_engine(db.sqlite_url(str(tmp_path / "c.sqlite")))
    db.migrate(engine)
    assert db.current_revision(engine) == db.HEAD_REVISION
    db.migrate(engine)  # a no-op: must not fail or change the revision
    assert db.current_revision(engine) == db.HEAD_REVISION


def test_revisions_lists_every_migration_oldest_first() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("strongroom.catalog") / "migrations"))
    walked = [s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()]
    assert tuple(reversed(walked)) == db.REVISIONS


def test_a_catalog_a_newer_version_migrated_is_used_as_it_is(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A newer strongroom adds tables or columns and moves the revision on; this one must go on recording
    into that catalog rather than stop on a revision it cannot locate."""
    from sqlalchemy import text

    from strongroom.audit.events import Event, utc_now
    from strongroom.audit.log import AuditLog

    url = db.sqlite_url(str(tmp_path / "c.sqlite"))
    AuditLog.open(url, "ab" * 16).close()
    engine = db.make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        conn.execute(text("CREATE TABLE later_feature (x INTEGER)"))
    engine.dispose()
    log = AuditLog.open(url, "ab" * 16)
    log.append([Event(0, utc_now(), "a", "a", "h", "ls", {}, "ok", {})])
    assert log.size() == 1
    assert db.current_revision(db.make_engine(url)) == "9999"
