"""Consent events out: event endpoints, the webhook delivery log, event columns of the webhook
outbox (their `contacts.external_id` comes from 0004).

All additive: existing deliveries (flow webhooks) have no endpoint and keep their retry rule.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 05:44:44.914504
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('event_endpoints',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('description', sa.String(), nullable=False),
    sa.Column('event_types', sa.String(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('secret_salt', sa.String(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('removed_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('event_endpoints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_event_endpoints_org_id'), ['org_id'], unique=False)

    op.create_table('webhook_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('delivery_id', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('attempted_at', sa.DateTime(), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['delivery_id'], ['webhook_deliveries.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('webhook_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_attempts_delivery_id'), ['delivery_id'], unique=False)

    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('endpoint_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('event_type', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('event_id', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('ordering_key', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('give_up_at', sa.DateTime(), nullable=True))
        batch_op.create_index('ix_webhook_deliveries_endpoint_order', ['endpoint_id', 'ordering_key', 'status'],
                              unique=False)



def downgrade() -> None:
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_deliveries_endpoint_order')
        batch_op.drop_column('give_up_at')
        batch_op.drop_column('ordering_key')
        batch_op.drop_column('event_id')
        batch_op.drop_column('event_type')
        batch_op.drop_column('endpoint_id')

    with op.batch_alter_table('webhook_attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_attempts_delivery_id'))

    op.drop_table('webhook_attempts')
    with op.batch_alter_table('event_endpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_event_endpoints_org_id'))

    op.drop_table('event_endpoints')
