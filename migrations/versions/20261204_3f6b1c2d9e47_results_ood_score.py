"""Results carry an out-of-distribution score: how far a scan lies from the model's training data.

Revision ID: 3f6b1c2d9e47
Revises: aae7a95880c8
Create Date: 2026-12-04 02:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '3f6b1c2d9e47'
down_revision: str | Sequence[str] | None = 'aae7a95880c8'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision (a nullable column: existing results keep None, 'not measured')."""
    op.add_column('results', sa.Column('ood_score', sa.Float(), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('results') as batch:  # SQLite drops a column through a table copy
        batch.drop_column('ood_score')
