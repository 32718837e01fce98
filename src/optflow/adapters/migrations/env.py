"""Alembic's environment for optflow. Alembic runs it for each migration command; the functions
of `optflow.adapters.migrations` hand it their connection, already inside the one transaction
the whole command runs in. Offline (`--sql`) mode is not supported."""

from alembic import context

from optflow.adapters import orm
from optflow.adapters.migrations import AUTOGENERATE, COMPARE_OPTIONS, render_item, skip_empty_revision

config = context.config
if context.is_offline_mode():
    raise RuntimeError("optflow's migrations run on a live connection only (no --sql mode)")

context.configure(
    connection=config.attributes["connection"],
    target_metadata=orm.metadata,
    render_as_batch=True,  # SQLite alters a table by copying it; batch mode does that for us
    **COMPARE_OPTIONS,
    render_item=render_item,
    process_revision_directives=skip_empty_revision if config.attributes.get(AUTOGENERATE) else None,
)
with context.begin_transaction():
    context.run_migrations()
