"""An org number may be an employee's own line (Movius's MultiLine): `org_numbers.agent_id`.

Additive and nullable: existing numbers stay the org's shared numbers.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 06:22:19.046149
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('org_numbers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('agent_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_org_numbers_agent_id', 'agents', ['agent_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('org_numbers', schema=None) as batch_op:
        batch_op.drop_constraint('fk_org_numbers_agent_id', type_='foreignkey')
        batch_op.drop_column('agent_id')
