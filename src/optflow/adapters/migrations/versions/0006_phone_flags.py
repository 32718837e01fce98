"""Phone records carry their own Active and Do-Not-Call flags (Collect!'s).

Additive: two booleans on `addresses`, false by default. Existing phone records get the flags
their call and text consents give them: the latest opt-in or opt-out of either decides (as it
would have, had the flags existed), and a phone with neither keeps both false.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 05:44:09.060162
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('addresses', schema=None) as batch_op:
        batch_op.add_column(sa.Column('active', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('do_not_call', sa.Boolean(), server_default=sa.false(), nullable=False))
    _backfill(op.get_bind())


def _backfill(conn: sa.Connection) -> None:
    addresses = sa.table('addresses', sa.column('org_id'), sa.column('value'), sa.column('kind'),
                         sa.column('active'), sa.column('do_not_call'))
    consents = sa.table('consents', sa.column('org_id'), sa.column('address'), sa.column('channel'),
                        sa.column('state'), sa.column('opted_in_at'), sa.column('opted_out_at'))
    rows = conn.execute(
        sa.select(consents.c.org_id, consents.c.address, consents.c.state, consents.c.opted_in_at,
                  consents.c.opted_out_at)
        .select_from(consents.join(addresses, sa.and_(addresses.c.org_id == consents.c.org_id,
                                                      addresses.c.value == consents.c.address)))
        .where(addresses.c.kind == 'phone', consents.c.channel.in_(('call', 'text')),
               consents.c.state.in_(('opted_in', 'reauth_due', 'opted_out'))))
    latest: dict[tuple[int, str], tuple[str, bool]] = {}
    for org_id, address, state, opted_in_at, opted_out_at in rows:
        opted_in = state != 'opted_out'
        moment = opted_in_at if opted_in else opted_out_at
        when = str(moment) if moment is not None else str(datetime.min)
        key = (org_id, address)
        if key not in latest or when >= latest[key][0]:
            latest[key] = (when, opted_in)
    for (org_id, address), (_, opted_in) in latest.items():
        conn.execute(sa.update(addresses).where(addresses.c.org_id == org_id, addresses.c.value == address)
                     .values(active=opted_in, do_not_call=not opted_in))


def downgrade() -> None:
    with op.batch_alter_table('addresses', schema=None) as batch_op:
        batch_op.drop_column('do_not_call')
        batch_op.drop_column('active')
