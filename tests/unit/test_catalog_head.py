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
