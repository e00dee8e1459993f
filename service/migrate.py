"""Alembic from code: the CLI's `migrate`, /readyz's head check and the tests use these."""

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from service.config import PROJECT_ROOT
from service.db import make_engine
from service.schema import Base


def alembic_config(database_url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    # ConfigParser interpolation would read a '%' in a password as a placeholder.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def drop_schema(database_url: str) -> None:
    """Drop every table of ours and Alembic's record (PostGIS stays). Tests and benchmarks only:
    it destroys the data."""
    engine = make_engine(database_url)
    with engine.begin() as connection:
        for table in [*Base.metadata.sorted_tables, None]:
            name = table.name if table is not None else "alembic_version"
            connection.execute(text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
    engine.dispose()


def head_revision(database_url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()
