"""REST API v1: users, tokens, instance owner/tags/description, operation owner, events

Revision ID: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "users",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("max_instances", sa.Integer, nullable=True),
        sa.Column("max_ram", sa.BigInteger, nullable=True),
        sa.Column("max_public_ips", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("user", sa.String(63), sa.ForeignKey("users.name", ondelete="CASCADE"), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("description", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_tokens_user", "tokens", ["user"])
    with op.batch_alter_table("instances") as b:
        b.add_column(sa.Column("owner", sa.String(63), nullable=False, server_default="admin"))
        b.add_column(sa.Column("description", sa.String(1024), nullable=False, server_default=""))
        b.add_column(sa.Column("tags", sa.JSON, nullable=False, server_default="{}"))
    op.create_index("ix_instances_owner", "instances", ["owner"])
    op.create_index("ix_instances_template", "instances", ["template"])
    op.create_index("ix_instances_state", "instances", ["state"])
    with op.batch_alter_table("operations") as b:
        b.add_column(sa.Column("owner", sa.String(63), nullable=False, server_default="admin"))
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("instance", sa.String(64), nullable=True),
        sa.Column("data", sa.JSON, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_type", "events", ["type"])
    op.create_index("ix_events_instance", "events", ["instance"])


def downgrade():
    op.drop_table("events")
    with op.batch_alter_table("operations") as b:
        b.drop_column("owner")
    op.drop_index("ix_instances_state", "instances")
    op.drop_index("ix_instances_template", "instances")
    op.drop_index("ix_instances_owner", "instances")
    with op.batch_alter_table("instances") as b:
        b.drop_column("tags")
        b.drop_column("description")
        b.drop_column("owner")
    op.drop_table("tokens")
    op.drop_table("users")
