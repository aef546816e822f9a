"""initial: instances and operations

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "instances",
        sa.Column("ctid", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("hostname", sa.String(253), nullable=False),
        sa.Column("init", sa.String(16), nullable=False),
        sa.Column("stop_signal", sa.String(16), nullable=False),
        sa.Column("limits", sa.JSON, nullable=False),
        sa.Column("live", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "operations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("args", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_operations_created", "operations", ["created_at"])


def downgrade():
    op.drop_table("operations")
    op.drop_table("instances")
