"""Employees' inboxes: which person has read which note (`note_reads`).

Additive: a new table. Notes stored before it count as unread for everyone; notes keep their
meaning (the `agent_id` of a note, the person it is for, was always empty before, which now
means a note for every person of the org).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 05:44:11.431383
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('note_reads',
    sa.Column('agent_id', sa.Integer(), nullable=False),
    sa.Column('message_id', sa.Integer(), nullable=False),
    sa.Column('read_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], ),
    sa.PrimaryKeyConstraint('agent_id', 'message_id')
    )


def downgrade() -> None:
    op.drop_table('note_reads')
