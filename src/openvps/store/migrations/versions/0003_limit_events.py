"""events: limit hits and OOM kills seen in instances' counters

Revision ID: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "limit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(timezone=True)),
        sa.Column("ctid", sa.Integer, nullable=False),
        sa.Column("instance", sa.String(63), nullable=False),
        sa.Column("resource", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("process", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("advice", sa.Text, nullable=False),
    )
    op.create_index("ix_limit_events_time", "limit_events", ["time"])
    op.create_index("ix_limit_events_ctid", "limit_events", ["ctid"])


def downgrade():
    op.drop_table("limit_events")
