"""DICOM series: a series table, scans linked to their series and slice order, jobs' --all-series.

Scans gain the new status "skipped" too; ``scan_status`` is a VARCHAR(16) without a CHECK
(``native_enum=False``), so that needs no DDL. Every new column is nullable (or has a server
default): the scans and jobs already recorded are not DICOM slices of a series, and analysed
only what the rules would pass then (none were skipped).

Revision ID: 1ce01377b6f3
Revises: 8c4e2a71d5b0
Create Date: 2026-12-04 20:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '1ce01377b6f3'
down_revision: str | Sequence[str] | None = '8c4e2a71d5b0'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table('series',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('study_key', sa.String(length=64), nullable=False),
    sa.Column('number', sa.Integer(), nullable=True),
    sa.Column('modality', sa.String(length=16), nullable=True),
    sa.Column('body_part', sa.String(length=16), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('image_type', sa.JSON(), nullable=True),
    sa.Column('orientation', sa.String(length=16), nullable=True),
    sa.Column('slice_count', sa.Integer(), nullable=True),
    sa.Column('spacing_mm', sa.Float(), nullable=True),
    sa.Column('spacing_from', sa.String(length=32), nullable=True),
    sa.Column('sequence', sa.String(length=32), nullable=True),
    sa.Column('sequence_because', sa.Text(), nullable=True),
    sa.Column('analysed', sa.Boolean(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('tumor_probability', sa.Float(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_series_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_series')),
    sa.UniqueConstraint('job_id', 'key', name=op.f('uq_series_job_id_key'))
    )
    # SQLite cannot add a foreign key to a table in place: batch mode copies the table there,
    # and alters it in place on PostgreSQL.
    with op.batch_alter_table('scans') as batch:
        batch.add_column(sa.Column('series_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('position_mm', sa.Float(), nullable=True))
        batch.add_column(sa.Column('instance', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('frame_positions', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('slice_index', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('frame_slices', sa.JSON(), nullable=True))
        batch.create_foreign_key(op.f('fk_scans_series_id_series'), 'series', ['series_id'], ['id'],
                                 ondelete='SET NULL')
        batch.create_index('ix_scans_series_id', ['series_id'], unique=False)
    op.add_column('jobs', sa.Column('all_series', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    """Revert this revision (series and slice order are lost; skipped scans become pending)."""
    op.execute("UPDATE scans SET status = 'pending', error = NULL WHERE status = 'skipped'")
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('all_series')
    with op.batch_alter_table('scans') as batch:
        batch.drop_index('ix_scans_series_id')
        batch.drop_constraint(op.f('fk_scans_series_id_series'), type_='foreignkey')
        for column in ('frame_slices', 'slice_index', 'frame_positions', 'instance', 'position_mm',
                       'series_id'):
            batch.drop_column(column)
    op.drop_table('series')
