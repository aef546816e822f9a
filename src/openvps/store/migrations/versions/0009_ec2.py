"""EC2-compatible API: access keys and the EC2 id mapping table

Revision ID: 0009_ec2
"""
import sqlalchemy as sa
from alembic import op

revision = "0009_ec2"
down_revision = "0008_dashboard"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "access_keys",
        sa.Column("id", sa.String(20), primary_key=True),
        sa.Column("secret", sa.String(40), nullable=False),
        sa.Column("user", sa.String(63), sa.ForeignKey("users.name", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_access_keys_user", "access_keys", ["user"])
    op.create_table(
        "ec2_objects",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(63), nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("ref", sa.String(64), nullable=True),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("kind", "owner", "name", name="uq_ec2_objects_name"),
    )
    op.create_index("ix_ec2_objects_kind", "ec2_objects", ["kind"])
    op.create_index("ix_ec2_objects_owner", "ec2_objects", ["owner"])
    op.create_index("ix_ec2_objects_ref", "ec2_objects", ["ref"])


def downgrade():
    op.drop_table("ec2_objects")
    op.drop_table("access_keys")
