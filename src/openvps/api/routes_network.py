"""REST routes for networking: networks, port forwards, public addresses, firewall rules.
Changes answer 202 with an operation (like the instance endpoints); bad input 4xx at once.
A user sees and changes the forwards, rules and public addresses of their own instances; networks
are the admin's (every user may attach instances to them)."""
from __future__ import annotations

import json
from typing import Optional

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, ConfigDict, Field

from ..service.networks import NetworkService
from ..service.users import Actor, etag
from .auth import current_actor

router = APIRouter(prefix="/1.0")


def _svc(req: Request) -> NetworkService:
    return req.app.state.node.networks


def _accepted(row):
    from .app import accepted
    return accepted(row)


class CreateNetwork(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="network name, e.g. lan0", examples=["lan0"])
    subnet: str = Field(description="IPv4 subnet; the gateway is its first address", examples=["10.89.0.0/24"])
    nat: bool = Field(True, description="masquerade traffic leaving through the node's uplink")


class AddForward(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instance: str = Field(description="CTID or name")
    proto: str = Field("tcp", description="tcp or udp")
    ports: str = Field(description="NODE_PORT:INSTANCE_PORT", examples=["2222:22"])


class AllocateAddress(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: Optional[str] = Field(None, description="a given address of the pool; default the next free one")


class Associate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instance: str = Field(description="CTID or name")


class AllowRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instance: str = Field(description="CTID or name")
    proto: str = Field("tcp", description="tcp or udp")
    port: int = Field(description="destination port in the instance")
    source: str = Field("0.0.0.0/0", description="source CIDR")


@router.get("/networks", summary="List networks")
def list_networks(req: Request, actor: Actor = Depends(current_actor)):
    return _svc(req).list_networks(actor)


@router.post("/networks", status_code=202, summary="Create a network: a bridge, its gateway and NAT (admins only)")
def create_network(req: Request, body: CreateNetwork, actor: Actor = Depends(current_actor)):
    return _accepted(_svc(req).create_network(body.name, body.subnet, body.nat, actor=actor))


@router.get("/networks/{name}", summary="Show a network and its leases, with its ETag")
def get_network(req: Request, name: str, actor: Actor = Depends(current_actor),
                if_none_match: Optional[str] = Header(None)):
    from .app import _tagged
    view = _svc(req).get_network(name, actor)
    return _tagged(view, etag("network", json.dumps(view, sort_keys=True)), if_none_match)


@router.delete("/networks/{name}", status_code=202, summary="Delete a network (admins only; refused while in use)")
def delete_network(req: Request, name: str, actor: Actor = Depends(current_actor)):
    return _accepted(_svc(req).delete_network(name, actor=actor))


@router.get("/forwards", summary="List port forwards")
def list_forwards(req: Request, actor: Actor = Depends(current_actor)):
    return _svc(req).list_forwards(actor)


@router.post("/forwards", status_code=202, summary="Forward a node port to an instance port")
def add_forward(req: Request, body: AddForward, actor: Actor = Depends(current_actor)):
    return _accepted(_svc(req).add_forward(body.instance, body.proto, body.ports, actor=actor))


@router.delete("/forwards/{proto}/{port}", status_code=202, summary="Remove a port forward")
def remove_forward(req: Request, proto: str, port: int, actor: Actor = Depends(current_actor)):
    return _accepted(_svc(req).remove_forward(proto, port, actor=actor))


@router.get("/addresses", summary="List public (elastic) addresses")
def list_addresses(req: Request, actor: Actor = Depends(current_actor)):
    return _svc(req).list_addresses(actor)


@router.post("/addresses", status_code=202, summary="Allocate a public address from the pool (counts against your max_public_ips quota)")
def allocate_address(req: Request, body: AllocateAddress | None = None, actor: Actor = Depends(current_actor)):
    return _accepted(_svc(req).allocate_address((body or AllocateAddress()).address, actor=actor))


@router.post("/addresses/{address}/associate", status_code=202, summary="Map a public address 1:1 to an instance")
def associate(req: Request, address: str, body: Associate, actor: Actor = Depends(current_actor)):
    return _accepted(_svc(req).associate(address, body.instance, actor=actor))


@router.post("/addresses/{address}/disassociate", status_code=202, summary="Unmap a public address")
def disassociate(req: Request, address: str, actor: Actor = Depends(current_actor)):
    return _accepted(_svc(req).disassociate(address, actor=actor))


@router.delete("/addresses/{address}", status_code=202, summary="Release a public address to the pool")
def release(req: Request, address: str, actor: Actor = Depends(current_actor)):
    return _accepted(_svc(req).release(address, actor=actor))


@router.get("/firewall", summary="List firewall rules (inbound allows)")
def list_rules(req: Request, actor: Actor = Depends(current_actor)):
    return _svc(req).list_rules(actor)


@router.post("/firewall", status_code=202, summary="Allow inbound traffic to an instance port")
def allow(req: Request, body: AllowRule, actor: Actor = Depends(current_actor)):
    return _accepted(_svc(req).allow(body.instance, body.proto, body.port, body.source, actor=actor))


@router.delete("/firewall/{rule_id}", status_code=202, summary="Remove a firewall rule")
def remove_rule(req: Request, rule_id: int, actor: Actor = Depends(current_actor)):
    return _accepted(_svc(req).remove_rule(rule_id, actor=actor))
