"""contacts.language: the language a contact is answered in.

Additive: a nullable column; existing contacts have no language yet (they are answered in the
language of their next message, else the org's default language, as before: English).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 05:44:00.085452
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('language', sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_column('language')
