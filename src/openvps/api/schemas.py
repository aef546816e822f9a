"""Request bodies. The limit fields are generated from THE limits table (domain/limits.py)."""
from __future__ import annotations

from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..domain.limits import LIMITS


def _limit_fields() -> dict:
    fields = {}
    for lim in LIMITS.values():
        desc = f"{lim.help}. Default {lim.render(lim.default)}; minimum {lim.render(lim.minimum)}"
        if lim.zero_means:
            desc += f"; 0 = {lim.zero_means}"
        if lim.kind == "size":
            desc += ". Sizes: 512M, 1.5G, 1024K or bytes"
        desc += f". Kernel: {lim.cgroup}. Like {lim.alias}."
        examples = list(lim.examples) or [lim.default]
        fields[lim.key] = (Optional[Union[int, str]], Field(None, description=desc, examples=examples))
    return fields


Limits = create_model("Limits", __config__=ConfigDict(extra="forbid"), **_limit_fields())


class CreateInstance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="unique DNS label, e.g. web1", examples=["web1"])
    template: str = Field(description="template to clone, e.g. minimal or debian-12", examples=["minimal"])
    ctid: Optional[int] = Field(None, description="numeric id (100..999999999); next free if omitted")
    hostname: Optional[str] = Field(None, description="defaults to the name")
    limits: Limits = Field(default_factory=Limits)   # type: ignore[valid-type]
    ssh_keys: list[str] = Field(default_factory=list, description="OpenSSH public keys for root's authorized_keys")
    root_password: Optional[str] = Field(None, description="root password (stored only as a hash inside the instance)")
    start: bool = Field(False, description="start it once created (like pct create --start)")
    volumes: list[str] = Field(default_factory=list, description="named volumes NAME:/path[:ro]; made if missing, "
                               "they outlive the instance", examples=[["data:/var/lib/mysql"]])
    mounts: list[str] = Field(default_factory=list, description="admins: node directories /node/dir:/path[:ro]",
                              examples=[["/srv/code:/var/www:ro"]])
    privileged: bool = Field(False, description="UNSAFE: no user namespace, root inside is root on the node. "
                             "By default every instance gets its own uid range")
    nets: Optional[list[str]] = Field(None, description="networks to join, one interface each (eth0, eth1, ...); "
                                      "default: the network 'default'", examples=[["lan0"]])
    ipadd: list[str] = Field(default_factory=list, description="given addresses (else the next free one)",
                             examples=[["10.88.0.50"]])
    nameservers: list[str] = Field(default_factory=list, description="written to /etc/resolv.conf")
    searchdomain: Optional[str] = Field(None, description="written to /etc/resolv.conf")
    tags: dict[str, str] = Field(default_factory=dict, description="key -> value labels, e.g. {\"env\": \"prod\"}")
    description: str = Field("", max_length=1024, description="free text")


class SetInstance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limits: Limits = Field(default_factory=Limits)   # type: ignore[valid-type]
    hostname: Optional[str] = None
    save: bool = Field(False, description="persist the change (otherwise it applies to the running instance only)")
    ipadd: list[str] = Field(default_factory=list, description="add addresses (always saved; live when running)")
    ipdel: list[str] = Field(default_factory=list, description="remove addresses")
    nameservers: Optional[list[str]] = Field(None, description="replace the nameservers in /etc/resolv.conf")
    searchdomain: Optional[str] = Field(None, description="replace the search domain ('' removes it)")
    tags: Optional[dict[str, str]] = Field(None, description="tags to add or change (merged with the existing ones)")
    untag: list[str] = Field(default_factory=list, description="tag keys to remove")
    description: Optional[str] = Field(None, max_length=1024, description="new description")


class StopInstance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout: Optional[int] = Field(None, ge=0, le=86400, description="seconds of graceful stop before the kill (default 60)")
    force: bool = Field(False, description="kill at once")


class RestartInstance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout: Optional[int] = Field(None, ge=0, le=86400)


class BuildTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="builder name: minimal, debian-12, ...", examples=["minimal"])
    force: bool = Field(False, description="rebuild even if built")


BIG = 1 << 62


class Quotas(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_instances: Optional[int] = Field(None, ge=0, le=BIG, description="instances the user may own (null: no limit)")
    max_ram: Optional[Union[int, str]] = Field(None, description="total saved RAM of the user's instances, e.g. 8G "
                                               "(null: no limit)", examples=["8G"])
    max_public_ips: Optional[int] = Field(None, ge=0, le=BIG, description="public addresses the user may hold "
                                          "(null: no limit; enforced by the networking layer)")


class CreateUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="a DNS label, e.g. alice", examples=["alice"])
    admin: bool = Field(False, description="admins see and change everything")
    quotas: Quotas = Field(default_factory=Quotas)


class UpdateUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    admin: Optional[bool] = None
    quotas: Quotas = Field(default_factory=Quotas, description="only the quotas given change; null removes a limit")


class CreateToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: Optional[str] = Field(None, description="whose token (admins only; default: yourself)")
    description: str = Field("", max_length=200, description="what it is for, e.g. ci")
