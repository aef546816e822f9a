"""`openvps user passwd`: the password a user logs in to the web dashboard with."""
from __future__ import annotations

import getpass
import sys

import typer

from . import render
from .main import JSON, client, fail, handled, user_app


def read_password() -> str:
    """Twice from the terminal (hidden), or one line from standard input (scripts)."""
    if sys.stdin.isatty():
        first = getpass.getpass("new password: ")
        if getpass.getpass("again: ") != first:
            fail("the passwords differ")
        return first
    line = sys.stdin.readline()
    if not line:
        fail("no password on standard input")
    return line.rstrip("\r\n")


def set_password(name: str) -> dict:
    return client().set_password(name, read_password())


@user_app.command("passwd")
@handled
def user_passwd(name: str = typer.Argument(..., help="whose password (admins: anybody's; users: their own)"),
                remove: bool = typer.Option(False, "--remove", help="remove it: only API tokens log in"),
                json_out: bool = JSON):
    """Set a user's web dashboard password (read from the terminal, or one line from stdin).
    Ends the user's browser sessions."""
    out = client().set_password(name, None) if remove else set_password(name)
    if json_out:
        return render.print_json(out)
    print(f"password of {name} {'removed' if remove else 'set'}")
