"""REST routes for networking: networks, port forwards, public addresses, firewall rules.
Changes answer 202 with an operation (like the instance endpoints); bad input 4xx at once."""
from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from ..service.networks import NetworkService

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
def list_networks(req: Request):
    return _svc(req).list_networks()


@router.post("/networks", status_code=202, summary="Create a network: a bridge, its gateway and NAT")
def create_network(req: Request, body: CreateNetwork):
    return _accepted(_svc(req).create_network(body.name, body.subnet, body.nat))


@router.get("/networks/{name}", summary="Show a network and its leases")
def get_network(req: Request, name: str):
    return _svc(req).get_network(name)


@router.delete("/networks/{name}", status_code=202, summary="Delete a network (refused while in use)")
def delete_network(req: Request, name: str):
    return _accepted(_svc(req).delete_network(name))


@router.get("/forwards", summary="List port forwards")
def list_forwards(req: Request):
    return _svc(req).list_forwards()


@router.post("/forwards", status_code=202, summary="Forward a node port to an instance port")
def add_forward(req: Request, body: AddForward):
    return _accepted(_svc(req).add_forward(body.instance, body.proto, body.ports))


@router.delete("/forwards/{proto}/{port}", status_code=202, summary="Remove a port forward")
def remove_forward(req: Request, proto: str, port: int):
    return _accepted(_svc(req).remove_forward(proto, port))


@router.get("/addresses", summary="List public (elastic) addresses")
def list_addresses(req: Request):
    return _svc(req).list_addresses()


@router.post("/addresses", status_code=202, summary="Allocate a public address from the pool")
def allocate_address(req: Request, body: AllocateAddress | None = None):
    return _accepted(_svc(req).allocate_address((body or AllocateAddress()).address))


@router.post("/addresses/{address}/associate", status_code=202, summary="Map a public address 1:1 to an instance")
def associate(req: Request, address: str, body: Associate):
    return _accepted(_svc(req).associate(address, body.instance))


@router.post("/addresses/{address}/disassociate", status_code=202, summary="Unmap a public address")
def disassociate(req: Request, address: str):
    return _accepted(_svc(req).disassociate(address))


@router.delete("/addresses/{address}", status_code=202, summary="Release a public address to the pool")
def release(req: Request, address: str):
    return _accepted(_svc(req).release(address))


@router.get("/firewall", summary="List firewall rules (inbound allows)")
def list_rules(req: Request):
    return _svc(req).list_rules()


@router.post("/firewall", status_code=202, summary="Allow inbound traffic to an instance port")
def allow(req: Request, body: AllowRule):
    return _accepted(_svc(req).allow(body.instance, body.proto, body.port, body.source))


@router.delete("/firewall/{rule_id}", status_code=202, summary="Remove a firewall rule")
def remove_rule(req: Request, rule_id: int):
    return _accepted(_svc(req).remove_rule(rule_id))
