"""networking: networks, nics, addresses, dns, forwards, public addresses, firewall rules

Revision ID: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CT = "instances.ctid"


def upgrade():
    op.create_table(
        "networks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(15), nullable=False, unique=True),
        sa.Column("subnet", sa.String(18), nullable=False, unique=True),
        sa.Column("gateway", sa.String(15), nullable=False),
        sa.Column("nat", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "nics",
        sa.Column("ctid", sa.Integer, sa.ForeignKey(CT, ondelete="CASCADE"), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("network_id", sa.Integer, sa.ForeignKey("networks.id"), nullable=False),
        sa.Column("mac", sa.String(17), nullable=False),
    )
    op.create_table(
        "addresses",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("network_id", sa.Integer, sa.ForeignKey("networks.id"), nullable=False),
        sa.Column("address", sa.String(15), nullable=False),
        sa.Column("ctid", sa.Integer, sa.ForeignKey(CT, ondelete="CASCADE"), nullable=False),
        sa.Column("nic", sa.Integer, nullable=False),
        sa.UniqueConstraint("network_id", "address", name="uq_addresses_network_address"),
    )
    op.create_table(
        "instance_dns",
        sa.Column("ctid", sa.Integer, sa.ForeignKey(CT, ondelete="CASCADE"), primary_key=True),
        sa.Column("nameservers", sa.JSON, nullable=False),
        sa.Column("searchdomain", sa.String(253), nullable=True),
    )
    op.create_table(
        "forwards",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ctid", sa.Integer, sa.ForeignKey(CT, ondelete="CASCADE"), nullable=False),
        sa.Column("proto", sa.String(3), nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("target_port", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("proto", "port", name="uq_forwards_proto_port"),
    )
    op.create_table(
        "public_addresses",
        sa.Column("address", sa.String(15), primary_key=True),
        sa.Column("ctid", sa.Integer, sa.ForeignKey(CT, ondelete="SET NULL"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "firewall_rules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ctid", sa.Integer, sa.ForeignKey(CT, ondelete="CASCADE"), nullable=False),
        sa.Column("proto", sa.String(3), nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("source", sa.String(18), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("ctid", "proto", "port", "source", name="uq_firewall_rule"),
    )


def downgrade():
    for t in ("firewall_rules", "public_addresses", "forwards", "instance_dns", "addresses", "nics", "networks"):
        op.drop_table(t)
