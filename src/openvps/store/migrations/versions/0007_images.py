"""Images and data: named volumes and the volumes/bind mounts of instances

Revision ID: 0007_images
"""
import sqlalchemy as sa
from alembic import op

revision = "0007_images"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "volumes",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("owner", sa.String(63), nullable=False, server_default="admin"),
        sa.Column("created_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "instance_mounts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ctid", sa.Integer, sa.ForeignKey("instances.ctid", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("source", sa.String(4096), nullable=False),
        sa.Column("target", sa.String(4096), nullable=False),
        sa.Column("readonly", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("ctid", "target", name="uq_instance_mounts_target"),
    )
    op.create_index("ix_instance_mounts_ctid", "instance_mounts", ["ctid"])


def downgrade():
    op.drop_index("ix_instance_mounts_ctid", "instance_mounts")
    op.drop_table("instance_mounts")
    op.drop_table("volumes")
