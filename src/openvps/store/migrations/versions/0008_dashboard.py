"""Web dashboard: user passwords, browser sessions, bookmarks, round-robin samples

Revision ID: 0008_dashboard
"""
import sqlalchemy as sa
from alembic import op

revision = "0008_dashboard"
down_revision = "0007_images"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("users") as b:
        b.add_column(sa.Column("password_hash", sa.String(200), nullable=True))
    op.create_table(
        "web_sessions",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(63), sa.ForeignKey("users.name", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_web_sessions_user", "web_sessions", ["user"])
    op.create_table(
        "bookmarks",
        sa.Column("ctid", sa.Integer, sa.ForeignKey("instances.ctid", ondelete="CASCADE"), primary_key=True),
        sa.Column("pos", sa.Integer, primary_key=True),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
    )
    op.create_table(
        "samples",
        sa.Column("ctid", sa.Integer, sa.ForeignKey("instances.ctid", ondelete="CASCADE"), primary_key=True),
        sa.Column("res", sa.Integer, primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("cpu_ns", sa.BigInteger, nullable=True),
        sa.Column("memory", sa.BigInteger, nullable=True),
        sa.Column("swap", sa.BigInteger, nullable=True),
        sa.Column("rx", sa.BigInteger, nullable=True),
        sa.Column("tx", sa.BigInteger, nullable=True),
    )


def downgrade():
    op.drop_table("samples")
    op.drop_table("bookmarks")
    op.drop_index("ix_web_sessions_user", "web_sessions")
    op.drop_table("web_sessions")
    with op.batch_alter_table("users") as b:
        b.drop_column("password_hash")
