"""/1.0/instances/{ident}/publish and /snapshots: golden images and snapshots (service/images.py)."""
from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from ..service.users import Actor
from .auth import admin_actor, current_actor
from .common import accepted

router = APIRouter(prefix="/1.0", dependencies=[Depends(current_actor)])


class Publish(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="the new template's name", examples=["web-golden"])
    description: str = Field("", max_length=1024)


class CreateSnapshot(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="snapshot name, unique per instance", examples=["before-upgrade"])
    description: str = Field("", max_length=1024)


class RestoreSnapshot(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: bool = Field(False, description="start the instance after the rollback (like pct rollback --start)")


def _svc(req: Request):
    return req.app.state.images


@router.post("/instances/{ident}/publish", status_code=202,
             summary="Publish an instance as a new template (frozen for the copy if running; 202 + operation)")
def publish(req: Request, ident: str, body: Publish, actor: Actor = Depends(current_actor)):
    return accepted(_svc(req).publish(ident, body.name, description=body.description, actor=actor))


@router.get("/instances/{ident}/snapshots", summary="List an instance's snapshots")
def list_snapshots(req: Request, ident: str, actor: Actor = Depends(current_actor)):
    return _svc(req).snapshots(ident, actor=actor)


@router.post("/instances/{ident}/snapshots", status_code=202,
             summary="Take a snapshot (a running instance is frozen during the copy; 202 + operation)")
def create_snapshot(req: Request, ident: str, body: CreateSnapshot, actor: Actor = Depends(current_actor)):
    return accepted(_svc(req).create_snapshot(ident, body.name, description=body.description, actor=actor))


@router.post("/instances/{ident}/snapshots/{name}/restore", status_code=202,
             summary="Roll back to a snapshot (a running instance is stopped first; start=true starts it after)")
def restore_snapshot(req: Request, ident: str, name: str, body: Optional[RestoreSnapshot] = None,
                     actor: Actor = Depends(current_actor)):
    return accepted(_svc(req).restore_snapshot(ident, name, start=(body or RestoreSnapshot()).start, actor=actor))


@router.delete("/instances/{ident}/snapshots/{name}", status_code=202, summary="Delete a snapshot")
def delete_snapshot(req: Request, ident: str, name: str, actor: Actor = Depends(current_actor)):
    return accepted(_svc(req).delete_snapshot(ident, name, actor=actor))


class Backup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: str = Field("snapshot", description="stop | suspend | snapshot (frozen only while its layer is copied)")
    to: str = Field(description="existing directory on the node (absolute path)", examples=["/var/backups/openvps"])


class Restore(BaseModel):
    model_config = ConfigDict(extra="forbid")
    archive: str = Field(description="the archive's absolute path on the node; ARCHIVE.sha256 must lie beside it")
    ctid: Optional[int] = Field(None, description="CTID for the new instance; next free if omitted")
    name: Optional[str] = Field(None, description="name for the new instance; the backed-up one if omitted")


@router.post("/instances/{ident}/backups", status_code=202,
             summary="Back up an instance into one tar+zstd archive with a sha256 file (admins; 202 + operation)")
def backup(req: Request, ident: str, body: Backup, actor: Actor = Depends(current_actor)):
    return accepted(req.app.state.backups.backup(ident, mode=body.mode, to=body.to, actor=actor))


@router.post("/backups/restore", status_code=202,
             summary="Restore a backup archive as a new instance (admins; checksum checked; 202 + operation)")
def restore(req: Request, body: Restore, actor: Actor = Depends(current_actor)):
    return accepted(req.app.state.backups.restore(body.archive, ctid=body.ctid, name=body.name, actor=actor))


class CreateVolume(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="volume name", examples=["data"])


def _volumes(req: Request):
    from ..service.volumes import VolumeService
    return VolumeService(req.app.state.node)


@router.get("/volumes", summary="List named volumes (yours; all for admins), with the instances using each")
def list_volumes(req: Request, actor: Actor = Depends(current_actor)):
    return _volumes(req).list(actor)


@router.post("/volumes", status_code=201, summary="Create an empty named volume")
def create_volume(req: Request, body: CreateVolume, actor: Actor = Depends(current_actor)):
    return _volumes(req).create(body.name, actor)


@router.delete("/volumes/{name}", summary="Delete a volume and its files (refused while an instance has it)")
def delete_volume(req: Request, name: str, actor: Actor = Depends(current_actor)):
    _volumes(req).delete(name, actor)
    return {"deleted": name}


class Rebase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    template: str = Field(description="NAME or NAME@REVISION", examples=["web-golden"])


@router.post("/instances/{ident}/rebase", status_code=202,
             summary="New root from a template, keeping volumes, mounts and identity (202 + operation)")
def rebase(req: Request, ident: str, body: Rebase, actor: Actor = Depends(current_actor)):
    return accepted(_svc(req).rebase(ident, body.template, actor=actor))


class UpdateTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    script: Optional[str] = Field(None, max_length=65536, description="shell script run in a throwaway instance "
                                  "(default: the OS's package upgrade)")


class Sync(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: Optional[int] = Field(None, ge=1, description="template version (revision); default the newest")
    exclude: list[str] = Field(default_factory=list, description="paths inside never touched", examples=[["/home"]])
    dry_run: bool = Field(False, description="only list what would change")


def _versions(req: Request):
    from ..service.versions import VersionService
    return VersionService(req.app.state.node)


@router.post("/templates/{name}/update", status_code=202, dependencies=[Depends(admin_actor)],
             summary="Make the next version of a template: a script run in a throwaway instance (admins; 202)")
def update_template(req: Request, name: str, body: Optional[UpdateTemplate] = None):
    return accepted(_versions(req).update(name, (body or UpdateTemplate()).script))


@router.get("/templates/{name}/versions", summary="Every version of a template, oldest first")
def template_versions(req: Request, name: str):
    from ..service.templates import TemplateService
    return [TemplateService(req.app.state.node).view(m) for m in _versions(req).family(name)]


@router.post("/instances/{ident}/sync", status_code=202,
             summary="Move an instance to another version of its template, keeping excluded paths and its "
                     "own changes (conflicts); dry_run lists the changes (202 + operation)")
def sync(req: Request, ident: str, body: Sync, actor: Actor = Depends(current_actor)):
    return accepted(_versions(req).sync(ident, to=body.to, exclude=body.exclude, dry_run=body.dry_run, actor=actor))


class ExportTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str = Field(description="file to write (absolute path on the node)")
    base: Optional[str] = Field(None, description="a template the other node has: export only a delta against it")


class ImportTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str = Field(description="export file (absolute path on the node)")


def _transfer(req: Request):
    from ..service.transfer import TransferService
    return TransferService(req.app.state.node)


@router.post("/templates/import", status_code=202, dependencies=[Depends(admin_actor)],
             summary="Import a template export (full or delta; content hash checked; admins; 202)")
def import_template(req: Request, body: ImportTemplate):
    return accepted(_transfer(req).import_(body.file))


@router.post("/templates/{name}/export", status_code=202, dependencies=[Depends(admin_actor)],
             summary="Export a template to a file, optionally as a zstd delta against a base (admins; 202)")
def export_template(req: Request, name: str, body: ExportTemplate):
    return accepted(_transfer(req).export(name, to=body.to, base=body.base))
