"""Public addresses have an owner (the user who allocated them; quota max_public_ips)

Revision ID: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("public_addresses") as b:
        b.add_column(sa.Column("owner", sa.String(63), nullable=False, server_default="admin"))
        b.create_index("ix_public_addresses_owner", ["owner"])


def downgrade():
    with op.batch_alter_table("public_addresses") as b:
        b.drop_index("ix_public_addresses_owner")
        b.drop_column("owner")
