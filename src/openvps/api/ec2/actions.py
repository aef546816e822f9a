"""All EC2 actions, by area (each module registers its own)."""
from . import act_addresses, act_basic, act_groups, act_instances, act_keypairs, act_tags  # noqa: F401
from .registry import ACTIONS  # noqa: F401
