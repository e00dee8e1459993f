from logging.config import fileConfig

from alembic import context

from service.config import get_settings
from service.db import make_engine
from service.schema import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# service.migrate sets the URL; plain `alembic` falls back to the service's own settings.
url = config.get_main_option("sqlalchemy.url") or get_settings().database_url


def _include_object(obj, name, type_, reflected, compare_to):
    if not (reflected and compare_to is None):
        return True
    # PostGIS owns these tables, and the point expression indexes (migrations 0007, 0020) exist only
    # on PostgreSQL, outside the models: neither is for autogenerate to drop.
    if type_ == "table":
        return name not in _POSTGIS_TABLES
    if type_ == "index":
        return name not in _POSTGIS_INDEXES
    return True


_POSTGIS_TABLES = {"spatial_ref_sys", "geometry_columns", "geography_columns"}
_POSTGIS_INDEXES = {"ix_citizen_place_geom", "ix_citizen_place_geog", "ix_citizen_place_point"}


def run_migrations_offline() -> None:
    context.configure(
        url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            include_object=_include_object,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
