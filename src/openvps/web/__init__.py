"""The web dashboard: server-rendered pages under /ui/ (Jinja2), its own JS and CSS, and the REST
routes it adds to /1.0 (passwords, bookmarks, samples). Every asset is served by the daemon."""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def mount(app: FastAPI) -> None:
    from ..service.samples import SampleService
    from ..service.webauth import WebAuth
    from . import pages, rest
    app.state.webauth = WebAuth(app.state.node, app.state.users)
    app.state.samples = SampleService(app.state.node)
    app.include_router(rest.router)
    app.include_router(pages.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse("/ui/", status_code=307)
