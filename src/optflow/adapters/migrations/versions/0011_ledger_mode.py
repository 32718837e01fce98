"""The mode each consent ledger entry was written under (`ledger.mode`), for the reports.

Additive: a nullable column, not covered by the entries' hashes, so every chain verifies as it
did. Entries written before it have no mode; the reports count them under their channel's
current mode and say how many there were.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 06:55:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('ledger') as batch_op:
        batch_op.add_column(sa.Column('mode', sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('ledger') as batch_op:
        batch_op.drop_column('mode')
