"""CLI: `openvps user keys create|list|delete USER` — access keys for the EC2-compatible API."""
from __future__ import annotations

import functools
import sys

import typer

from . import render

keys_app = typer.Typer(help="EC2 API access keys (SigV4): an id + secret, for boto3 and the AWS CLI.",
                       no_args_is_help=True)
JSON = typer.Option(False, "--json", help="print JSON")


def _main():
    from . import main
    return main


def register(user_app: typer.Typer) -> None:
    user_app.add_typer(keys_app, name="keys")


def handled(fn):
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        return _main().handled(fn)(*a, **kw)
    return wrapper


@keys_app.command("create")
@handled
def keys_create(user: str = typer.Argument(..., help="whose key"), json_out: bool = JSON):
    """Create an access key. The secret is printed ONCE (as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)."""
    k = _main().client().create_access_key(user)
    if json_out:
        return render.print_json(k)
    sys.stderr.write(f"access key for {k['user']} (the secret is shown once):\n")
    print(f"AWS_ACCESS_KEY_ID={k['access_key_id']}")
    print(f"AWS_SECRET_ACCESS_KEY={k['secret_access_key']}")


@keys_app.command("list")
@handled
def keys_list(user: str = typer.Argument(...), json_out: bool = JSON):
    """List a user's access keys (never the secrets)."""
    items = _main().client().access_keys(user)
    if json_out:
        return render.print_json(items)
    render.table(["ACCESS KEY ID", "USER", "CREATED"],
                 [[k["access_key_id"], k["user"], (k["created_at"] or "-")[:19]] for k in items])


@keys_app.command("delete")
@handled
def keys_delete(user: str = typer.Argument(...), key_id: str = typer.Argument(..., help="the access key id"),
                json_out: bool = JSON):
    """Delete an access key: requests signed with it fail with AuthFailure from now on."""
    _main().client().delete_access_key(user, key_id)
    if json_out:
        return render.print_json({"deleted": key_id})
    print(f"access key {key_id} deleted")
