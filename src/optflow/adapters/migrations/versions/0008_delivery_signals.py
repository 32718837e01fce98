"""Delivery signals: an address's do-not-contact reason per channel (bounces, complaints, carrier
blocks), the provider's delivery report and error code on messages, and WhatsApp template messages.

All additive and nullable: existing consents carry nothing against them, existing messages no
report and no template.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 05:42:25.991965
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('consents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('do_not_contact', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('do_not_contact_at', sa.DateTime(), nullable=True))

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('provider_status', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('error_code', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('template_json', sa.Text(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('template_json')
        batch_op.drop_column('error_code')
        batch_op.drop_column('provider_status')

    with op.batch_alter_table('consents', schema=None) as batch_op:
        batch_op.drop_column('do_not_contact_at')
        batch_op.drop_column('do_not_contact')

