"""Small helpers shared by the routers."""
from __future__ import annotations

from fastapi.responses import JSONResponse

from ..service.operations import op_view


def accepted(row: dict) -> JSONResponse:
    return JSONResponse(op_view(row), status_code=202, headers={"Location": f"/1.0/operations/{row['id']}"})


def limits_of(model) -> dict:
    return {k: v for k, v in model.model_dump().items() if v is not None}
