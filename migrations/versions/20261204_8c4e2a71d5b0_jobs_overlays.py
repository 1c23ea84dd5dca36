"""Jobs say whether their full-size overlays are written at once or rendered on demand.

Revision ID: 8c4e2a71d5b0
Revises: 3f6b1c2d9e47
Create Date: 2026-12-04 05:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '8c4e2a71d5b0'
down_revision: str | Sequence[str] | None = '3f6b1c2d9e47'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision (nullable: the jobs already recorded wrote their overlays, None = eager)."""
    op.add_column('jobs', sa.Column('overlays', sa.String(length=16), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('jobs') as batch:  # SQLite drops a column through a table copy
        batch.drop_column('overlays')
