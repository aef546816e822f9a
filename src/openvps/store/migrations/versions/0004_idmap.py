"""unprivileged instances: a uid range per instance

Revision ID: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("instances") as b:
        b.add_column(sa.Column("privileged", sa.Boolean, nullable=False, server_default=sa.false()))
        b.add_column(sa.Column("uid_base", sa.Integer, nullable=True))
        b.create_unique_constraint("uq_instances_uid_base", ["uid_base"])
    # instances made before this revision ran privileged: keep them so, truthfully
    op.execute("UPDATE instances SET privileged = 1")


def downgrade():
    with op.batch_alter_table("instances") as b:
        b.drop_constraint("uq_instances_uid_base")
        b.drop_column("uid_base")
        b.drop_column("privileged")
