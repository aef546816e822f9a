"""Key pairs, stored per user: CreateKeyPair (made with ssh-keygen; the private key is returned once
and not kept), ImportKeyPair, DescribeKeyPairs, DeleteKeyPair. RunInstances with KeyName puts the
public key into the instance's authorized_keys."""
from __future__ import annotations

import base64
import binascii
import re
import subprocess
import tempfile
from datetime import timezone
from pathlib import Path

from ...drivers.templates import setup as tsetup
from .context import Ctx, check_id, new_id
from .registry import action, tag_list
from .wire import Ec2Error, Params, matches

_NAME = re.compile(r"^[\x20-\x7e]{1,255}$")


def _fingerprint(public_key: str, md5: bool) -> str:
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "k.pub"
        f.write_text(public_key + "\n")
        out = subprocess.run(["ssh-keygen", "-l", "-E", "md5" if md5 else "sha256", "-f", str(f)],
                             capture_output=True, text=True)
    if out.returncode != 0:
        raise Ec2Error("InvalidKeyPair.Format", f"Key is not in valid OpenSSH public key format: "
                       f"{out.stderr.strip()}")
    fp = out.stdout.split()[1]
    return fp.removeprefix("MD5:") if md5 else fp.removeprefix("SHA256:") + "="


def _name(p: Params) -> str:
    name = p.str("KeyName", required=True)
    if not _NAME.match(name):
        raise Ec2Error("InvalidParameterValue", "KeyName: 1 to 255 printable ASCII characters")
    return name


def find_key(ctx: Ctx, name: str | None = None, key_id: str | None = None) -> dict:
    if key_id is not None:
        check_id(key_id, "key-", "InvalidKeyPairId")
        rec = ctx.owned(key_id, "keypair")
        if rec:
            return rec
        raise Ec2Error("InvalidKeyPair.NotFound", f"The key pair ID '{key_id}' does not exist")
    found = ctx.svc.ec2.find("keypair", owner=ctx.owner, name=name)
    if not found:
        raise Ec2Error("InvalidKeyPair.NotFound", f"The key pair '{name}' does not exist")
    return found[0]


def _add(ctx: Ctx, name: str, public_key: str, key_type: str, fingerprint: str, tags: dict) -> dict:
    if ctx.svc.ec2.find("keypair", owner=ctx.owner, name=name):
        raise Ec2Error("InvalidKeyPair.Duplicate", f"The keypair '{name}' already exists.")
    return ctx.svc.ec2.add("keypair", new_id("key-"), ctx.owner, name=name,
                           data={"public_key": public_key, "type": key_type, "fingerprint": fingerprint, "tags": tags})


@action("CreateKeyPair")
def create_key_pair(ctx: Ctx, p: Params) -> dict:
    from .act_instances import _tag_specs
    name = _name(p)
    key_type = p.str("KeyType") or "rsa"
    if key_type not in ("rsa", "ed25519"):
        raise Ec2Error("InvalidParameterValue", f"KeyType: rsa or ed25519, not {key_type!r}")
    if (p.str("KeyFormat") or "pem") != "pem":
        raise Ec2Error("InvalidParameterValue", "KeyFormat: openvps makes pem (OpenSSH) keys only")
    tags = _tag_specs(p, "key-pair")
    if ctx.svc.ec2.find("keypair", owner=ctx.owner, name=name):
        raise Ec2Error("InvalidKeyPair.Duplicate", f"The keypair '{name}' already exists.")
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "key"
        args = ["-t", "rsa", "-b", "2048", "-m", "PEM"] if key_type == "rsa" else ["-t", "ed25519"]
        subprocess.run(["ssh-keygen", "-q", *args, "-N", "", "-C", name.replace(" ", "_")[:64], "-f", str(f)],
                       check=True, capture_output=True)
        private, public = f.read_text(), (Path(d) / "key.pub").read_text().strip()
    rec = _add(ctx, name, public, key_type, _fingerprint(public, md5=key_type == "rsa"), tags)
    return {"keyPairId": rec["id"], "keyName": name, "keyFingerprint": rec["data"]["fingerprint"],
            "keyMaterial": private.rstrip("\n"), "tagSet": tag_list(tags)}


@action("ImportKeyPair")
def import_key_pair(ctx: Ctx, p: Params) -> dict:
    from .act_instances import _tag_specs
    name = _name(p)
    raw = p.str("PublicKeyMaterial", required=True)
    try:
        text = base64.b64decode(raw, validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise Ec2Error("InvalidKeyPair.Format", "PublicKeyMaterial: base64 of an OpenSSH public key line") from None
    try:
        public = tsetup.validate_ssh_key(text)
    except ValueError as e:
        raise Ec2Error("InvalidKeyPair.Format", f"Key is not in valid OpenSSH public key format: {e}") from None
    key_type = "rsa" if public.startswith("ssh-rsa") else "ed25519" if public.startswith("ssh-ed25519") else \
        public.split()[0]
    rec = _add(ctx, name, public, key_type, _fingerprint(public, md5=True), _tag_specs(p, "key-pair"))
    return {"keyPairId": rec["id"], "keyName": name, "keyFingerprint": rec["data"]["fingerprint"],
            "tagSet": tag_list(rec["data"]["tags"])}


def _view(rec: dict, with_public: bool) -> dict:
    d = rec["data"]
    created = rec["created_at"]
    return {"keyPairId": rec["id"], "keyName": rec["name"], "keyFingerprint": d["fingerprint"], "keyType": d["type"],
            "tagSet": tag_list(d.get("tags", {})), "publicKey": d["public_key"] if with_public else None,
            "createTime": created if created.tzinfo else created.replace(tzinfo=timezone.utc)}


@action("DescribeKeyPairs")
def describe_key_pairs(ctx: Ctx, p: Params) -> dict:
    names, ids = p.strs("KeyName"), p.strs("KeyPairId")
    recs = [find_key(ctx, name=n) for n in names] + [find_key(ctx, key_id=i) for i in ids]
    if not names and not ids:
        recs = ctx.svc.ec2.find("keypair", owner=ctx.actor.scope)
    out = []
    for r in recs:
        d = r["data"]
        if matches(p.filters(), {"key-name": r["name"], "key-pair-id": r["id"], "fingerprint": d["fingerprint"],
                                 "key-type": d["type"]}, d.get("tags", {})):
            out.append(_view(r, p.bool("IncludePublicKey")))
    return {"keySet": out}


@action("DeleteKeyPair")
def delete_key_pair(ctx: Ctx, p: Params) -> dict:
    name, key_id = p.str("KeyName"), p.str("KeyPairId")
    if not name and not key_id:
        raise Ec2Error("MissingParameter", "The request must contain the parameter KeyName or KeyPairId")
    try:
        rec = find_key(ctx, name=name, key_id=key_id)
    except Ec2Error as e:
        if e.code == "InvalidKeyPair.NotFound":     # AWS: deleting a missing key pair succeeds
            return {"return": True}
        raise
    ctx.svc.ec2.delete(rec["id"])
    return {"return": True, "keyPairId": rec["id"]}
