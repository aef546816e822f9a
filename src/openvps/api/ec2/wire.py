"""The EC2 query protocol as botocore speaks it: flattened form parameters in, XML out, and AWS
Signature Version 4 checked against the caller's access key. No business rules here."""
from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from urllib.parse import parse_qsl, quote, unquote
from xml.sax.saxutils import escape

NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
MAX_SKEW = timedelta(minutes=5)


class Ec2Error(Exception):
    """An EC2 error: its code is what boto3 puts in e.response['Error']['Code']. Client errors are
    4xx (botocore retries 5xx)."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


# ---------------------------------------------------------------- parameters
def parse_params(query: str, body: bytes, content_type: str) -> dict[str, str]:
    params = dict(parse_qsl(query, keep_blank_values=True))
    if body and content_type.split(";")[0].strip().lower() in ("application/x-www-form-urlencoded", ""):
        try:
            params.update(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError:
            raise Ec2Error("InvalidParameterValue", "the request body is not UTF-8 form data") from None
    return params


def nest(params: dict[str, str]) -> dict:
    """Flattened keys -> a tree: 'Filter.1.Value.2' -> {'Filter': [{'Value': [..]}]}. Numbered levels
    become lists in index order (AWS numbers from 1)."""
    tree: dict = {}
    for key, value in params.items():
        parts = key.split(".")
        node = tree
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = node[p] = {}
            node = nxt
        if isinstance(node.get(parts[-1]), dict):
            continue        # 'X' and 'X.1' both given: keep the structured one
        node[parts[-1]] = value
    return _lists(tree)


def _lists(node):
    if not isinstance(node, dict):
        return node
    if node and all(k.isdigit() for k in node):
        return [_lists(node[k]) for k in sorted(node, key=int)]
    return {k: _lists(v) for k, v in node.items()}


class Params:
    """Typed access to one request's parameters, with EC2-style errors for bad values."""

    def __init__(self, flat: dict[str, str]):
        self.flat = flat
        self.tree = nest(flat)

    def str(self, name: str, default: str | None = None, required: bool = False) -> str | None:
        v = self.tree.get(name)
        if isinstance(v, (dict, list)):
            raise Ec2Error("InvalidParameterValue", f"{name} takes one value")
        if v is None or v == "":
            if required:
                raise Ec2Error("MissingParameter", f"The request must contain the parameter {name}")
            return default
        return v

    def int(self, name: str, default: int | None = None, required: bool = False) -> int | None:
        v = self.str(name, required=required)
        if v is None:
            return default
        try:
            return int(v)
        except ValueError:
            raise Ec2Error("InvalidParameterValue", f"Invalid value '{v}' for {name}: a whole number") from None

    def bool(self, name: str, default: bool = False) -> bool:
        v = self.str(name)
        if v is None:
            return default
        if v.lower() not in ("true", "false"):
            raise Ec2Error("InvalidParameterValue", f"Invalid value '{v}' for {name}: true or false")
        return v.lower() == "true"

    def list(self, name: str) -> list:
        """InstanceId.1, InstanceId.2 ... (a bare InstanceId counts as one)."""
        v = self.tree.get(name)
        if v is None:
            return []
        if isinstance(v, dict):
            raise Ec2Error("InvalidParameterValue", f"{name} must be numbered: {name}.1, {name}.2 ...")
        return v if isinstance(v, list) else [v]

    def strs(self, name: str) -> list[str]:
        """A numbered list of plain values (ids, names)."""
        out = self.list(name)
        if any(not isinstance(x, str) for x in out):
            raise Ec2Error("InvalidParameterValue", f"{name}.N takes plain values")
        return out

    def filters(self) -> list[tuple[str, list[str]]]:
        out = []
        for f in self.list("Filter"):
            if not isinstance(f, dict) or not f.get("Name"):
                raise Ec2Error("InvalidParameterValue", "each Filter.N needs a Name and Value.M")
            vals = f.get("Value", [])
            vals = vals if isinstance(vals, list) else [vals]
            if not isinstance(f["Name"], str) or any(not isinstance(v, str) for v in vals):
                raise Ec2Error("InvalidParameterValue", "Filter.N.Name and Filter.N.Value.M take plain values")
            out.append((f["Name"], vals))
        return out


# ---------------------------------------------------------------- filters
def _wild(pattern: str) -> re.Pattern:
    """EC2 filter values: * any run, ? one character, everything else literal (case-sensitive)."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(rx + r"\Z", re.S)


def matches(filters: list[tuple[str, list[str]]], fields: dict[str, Any], tags: dict[str, str] | None = None,
            known: set[str] | None = None) -> bool:
    """Filters are AND'd, a filter's values OR'd; tag:KEY, tag-key and tag-value work everywhere a
    resource has tags. A field may hold one value or a list (any match counts)."""
    tags = tags or {}
    for name, values in filters:
        if name.startswith("tag:"):
            have = [tags[name[4:]]] if name[4:] in tags else []
        elif name == "tag-key":
            have = list(tags)
        elif name == "tag-value":
            have = list(tags.values())
        elif name in fields:
            v = fields[name]
            have = [] if v is None else [_s(x) for x in v] if isinstance(v, (list, tuple, set)) else [_s(v)]
        else:
            raise Ec2Error("InvalidParameterValue", f"The filter '{name}' is invalid"
                           + (f"; known: {', '.join(sorted(known))}" if known else ""))
        pats = [_wild(v) for v in values]
        if not any(p.match(h) for p in pats for h in have):
            return False
    return True


def _s(v) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


# ---------------------------------------------------------------- XML
def _xml(tag: str, value, out: list[str]) -> None:
    if value is None:
        return
    if isinstance(value, dict):
        out.append(f"<{tag}>")
        for k, v in value.items():
            _xml(k, v, out)
        out.append(f"</{tag}>")
    elif isinstance(value, (list, tuple)):
        out.append(f"<{tag}>")
        for v in value:
            _xml("item", v, out)
        out.append(f"</{tag}>")
    else:
        out.append(f"<{tag}>{escape(_text(value))}</{tag}>")


def _text(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime):
        return iso(v)
    return str(v)


def iso(t: datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def render(action: str, body: dict, request_id: str) -> bytes:
    out = [f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response xmlns="{NS}">',
           f"<requestId>{request_id}</requestId>"]
    for k, v in body.items():
        _xml(k, v, out)
    out.append(f"</{action}Response>")
    return "".join(out).encode()


def render_error(code: str, message: str, request_id: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{escape(code)}</Code>'
            f"<Message>{escape(message)}</Message></Error></Errors><RequestID>{request_id}</RequestID>"
            "</Response>").encode()


def request_id() -> str:
    return str(uuid.uuid4())


# ---------------------------------------------------------------- SigV4
_AUTH = re.compile(r"AWS4-HMAC-SHA256\s+Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})\s*$")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    k = _hmac(("AWS4" + secret).encode(), date)
    return _hmac(_hmac(_hmac(k, region), service), "aws4_request")


def _canonical_query(query: str, drop: str | None = None) -> str:
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != drop]
    enc = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in enc)


def verify_sigv4(method: str, raw_path: str, query: str, headers: dict[str, list[str]], body: bytes,
                 secret_for: Callable[[str], str | None], now: datetime | None = None) -> str:
    """Check the request's SigV4 signature (Authorization header, or presigned query string).
    `headers`: lower-case name -> values. Returns the access key id; raises AuthFailure."""
    now = now or datetime.now(timezone.utc)
    auth = (headers.get("authorization") or [""])[0]
    q = dict(parse_qsl(query, keep_blank_values=True))
    if auth:
        m = _AUTH.match(auth.strip())
        if not m:
            raise Ec2Error("AuthFailure", "AWS was not able to validate the provided access credentials "
                           "(the Authorization header is not AWS4-HMAC-SHA256)", 401)
        credential, signed, signature = m.groups()
        amz_date = (headers.get("x-amz-date") or [""])[0]
        canonical_qs = _canonical_query(query)
        expires = None
    elif q.get("X-Amz-Algorithm") == "AWS4-HMAC-SHA256":
        credential, signed, signature = q.get("X-Amz-Credential", ""), q.get("X-Amz-SignedHeaders", ""), \
            q.get("X-Amz-Signature", "")
        amz_date = q.get("X-Amz-Date", "")
        canonical_qs = _canonical_query(query, drop="X-Amz-Signature")
        try:
            expires = int(q.get("X-Amz-Expires", "3600"))
        except ValueError:
            raise Ec2Error("AuthFailure", "X-Amz-Expires is not a number", 401) from None
    else:
        raise Ec2Error("AuthFailure", "AWS was not able to validate the provided access credentials "
                       "(the request is not signed: sign it with SigV4 and an openvps access key)", 401)
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise Ec2Error("AuthFailure", "the credential scope is malformed", 401)
    key_id, date, region, service, _ = parts
    try:
        t = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise Ec2Error("AuthFailure", "X-Amz-Date is missing or not YYYYMMDDTHHMMSSZ", 401) from None
    if expires is None and abs(now - t) > MAX_SKEW:
        raise Ec2Error("AuthFailure", f"Signature not yet current or expired: the request time {amz_date} is more "
                       "than 5 minutes from the server's; check the client's clock", 401)
    if expires is not None and not (t - MAX_SKEW <= now <= t + timedelta(seconds=expires)):
        raise Ec2Error("AuthFailure", "the presigned request has expired", 401)
    if date != amz_date[:8]:
        raise Ec2Error("AuthFailure", "the credential date does not match X-Amz-Date", 401)
    secret = secret_for(key_id)
    if secret is None:
        raise Ec2Error("AuthFailure", "AWS was not able to validate the provided access credentials "
                       "(unknown access key; make one with `openvps user keys create USER`)", 401)
    names = signed.split(";")
    if "host" not in names:
        raise Ec2Error("AuthFailure", "the signature must cover the Host header", 401)
    canon_headers = "".join(f"{n}:{','.join(' '.join(v.split()) for v in headers.get(n, []))}\n" for n in names)
    payload = (headers.get("x-amz-content-sha256") or [hashlib.sha256(body).hexdigest()])[0]
    path = quote(unquote(raw_path or "/"), safe="/~") or "/"
    creq = "\n".join([method.upper(), path, canonical_qs, canon_headers, signed, payload])
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    want = hmac.new(signing_key(secret, date, region, service), to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, signature):
        raise Ec2Error("AuthFailure", "AWS was not able to validate the provided access credentials "
                       "(the signature does not match: wrong secret key?)", 401)
    return key_id
