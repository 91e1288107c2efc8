"""What an audit's owner asks of the service: submit a dataset, withdraw an audit.

Both are synchronous (run them in a thread): the dataset's inspection and storage take time,
and nothing here needs the event loop.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from app import callback_urls, lifecycle
from app.context import Context
from app.estimates import estimate_cost
from app.formats import (
    DEFAULT_IMAGE_SIZE,
    MAX_IMAGE_SIZE,
    DatasetError,
    DatasetInfo,
    inspect_dataset,
)
from app.formats.base import MIN_IMAGE_SIDE
from app.services import access, queries
from app.settings import get_settings
from app.tables import Audit
from app.uploads import Upload
from app.views import to_read
from dataset_audit.schemas import AuditRead, AuditStatus, CostEstimate, DryRun
from incompat.config import PRESET_NAMES, PresetName


class Refused(Exception):
    """The submission is refused; ``status_code`` and ``detail`` are the HTTP answer."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


MAX_SEED = 2**63 - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_NAME = 200
MAX_URL = 2048


class Options(BaseModel):
    """An upload's options. Values arrive as form text; a blank one takes the default, and each
    refusal says what is wanted in the words a person reads in the 422."""

    preset: PresetName | None = Field(
        default=None, description="default: the service's (DEFAULT_PRESET, fast unless set)"
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    image_size: int | None = Field(
        default=None,
        ge=MIN_IMAGE_SIDE,
        le=MAX_IMAGE_SIZE,
        description="Bring every image to this square size: its short side scaled to it, "
        "keeping the aspect, then its centre cropped. Default: images of one size are kept as "
        f"they are, and mixed sizes are brought to {DEFAULT_IMAGE_SIZE} x {DEFAULT_IMAGE_SIZE} "
        "the same way.",
    )
    name: str | None = Field(default=None, max_length=MAX_NAME)
    callback_url: str | None = Field(
        default=None,
        max_length=MAX_URL,
        json_schema_extra={"format": "uri"},
        description="POSTed the audit, signed, when it ends.",
    )
    reuse: bool = Field(
        default=True,
        description="Answer with an earlier audit of the same content, preset, seed and "
        "image_size when there is one.",
    )

    @model_validator(mode="before")
    @classmethod
    def _blanks_are_defaults(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        stripped = {k: v.strip() if isinstance(v, str) else v for k, v in values.items()}
        return {k: v for k, v in stripped.items() if v != ""}

    @field_validator("preset", mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        if value is not None and value not in PRESET_NAMES:
            raise _refusal(f"preset must be one of {', '.join(PRESET_NAMES)}; got {value!r}")
        return value

    @field_validator("seed", mode="before")
    @classmethod
    def _seed(cls, value: Any) -> Any:
        text = str(value)
        # isascii: str.isdigit() also admits digits int() refuses, such as "²".
        if not (text.isascii() and text.isdigit()) or int(text) > MAX_SEED:
            raise _refusal(f"seed must be an integer from 0 to {MAX_SEED}; got {value!r}")
        return int(text)

    @field_validator("image_size", mode="before")
    @classmethod
    def _image_size(cls, value: Any) -> Any:
        text = str(value)
        # The length first: int() of thousands of digits is slow, and refused past 4300.
        if not (
            text.isascii()
            and text.isdigit()
            and len(text) <= 6
            and MIN_IMAGE_SIDE <= int(text) <= MAX_IMAGE_SIZE
        ):
            raise _refusal(
                f"image_size must be an integer from {MIN_IMAGE_SIDE} to {MAX_IMAGE_SIZE} "
                f"(pixels), or blank; got {value!r}"
            )
        return int(text)

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        # A name is shown in pages, logs and terminals: control characters only garble them.
        value = _CONTROL.sub("", value).strip()
        if len(value) > MAX_NAME:
            raise _refusal(f"name must be at most {MAX_NAME} characters")
        return value or None

    @field_validator("callback_url", mode="before")
    @classmethod
    def _callback_url(cls, value: Any, info: ValidationInfo) -> Any:
        try:
            parts = urlsplit(value)
        except (ValueError, TypeError):  # e.g. an unclosed IPv6 bracket
            parts = urlsplit("")
        not_a_url = _refusal(f"callback_url must be an http(s) URL; got {value!r}")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise not_a_url
        if len(value) > MAX_URL:
            raise _refusal(f"callback_url must be at most {MAX_URL} characters")
        # An address or a localhost name is refused now, as written and as the worker's HTTP
        # client reads it; any other name is resolved and checked at each delivery
        # (app/callback_urls.py). The settings come in the validation context when the caller
        # has them, as the process's own otherwise.
        settings = (info.context or {}).get("settings") or get_settings()
        try:
            callback_urls.check_host(parts.hostname or "", settings.webhook_networks)
            callback_urls.check_host(httpx.URL(value).host, settings.webhook_networks)
        except callback_urls.AddressRefused as exc:
            raise _refusal(str(exc)) from None
        except httpx.InvalidURL:
            raise not_a_url from None
        return value

    @field_validator("reuse", mode="before")
    @classmethod
    def _reuse(cls, value: Any) -> Any:
        text = str(value).lower()
        if text not in ("true", "false", "1", "0"):
            raise _refusal(f"reuse must be true or false; got {text!r}")
        return text in ("true", "1")


def _refusal(message: str) -> PydanticCustomError:
    # The message goes through str.format: braces in what the user sent must stay literal.
    return PydanticCustomError("invalid_option", "{message}", {"message": message})


@dataclass(frozen=True)
class Submitted:
    audit: AuditRead
    reused: bool  # an earlier audit of the same content, preset, seed and image_size answers


def submit(context: Context, tenant: str, upload: Upload, options: Options) -> Submitted:
    """Answer with an earlier audit of the same content when ``reuse`` allows one, or inspect,
    store and queue the dataset; the spooled upload is gone either way. ``Refused`` when the file
    is not a dataset this service reads (422) or the tenant is over its quota (429)."""
    preset = options.preset or context.settings.default_preset
    try:
        if options.reuse:
            with context.reads() as session:
                earlier = queries.find_reusable(
                    session,
                    upload.sha256,
                    tenant=tenant,
                    preset=preset,
                    seed=options.seed,
                    image_size=options.image_size,
                )
            if earlier is not None:
                return Submitted(earlier, reused=True)
        info = _inspect(context, upload, options)
        audit = _new_audit(tenant, upload, info, options, preset)
        audit.estimate = _estimate(context, preset, info).model_dump()
        context.storage.put_file(upload.path, audit.storage_key)
    finally:
        upload.discard()
    try:
        lifecycle.create(context, audit)
    except BaseException as exc:
        context.storage.delete_prefix(f"audits/{audit.id}")
        if isinstance(exc, access.QuotaExceeded):
            raise Refused(429, str(exc)) from exc
        raise
    return Submitted(to_read(audit), reused=False)


def dry_run(context: Context, upload: Upload, options: Options) -> DryRun:
    """Inspect the upload and estimate its audit's cost, storing and queueing nothing; the spooled
    upload is gone after. ``Refused`` (422) when the file is not a dataset this service reads."""
    preset = options.preset or context.settings.default_preset
    try:
        info = _inspect(context, upload, options)
    finally:
        upload.discard()
    return DryRun(
        preset=preset,
        n_samples=info.n_samples,
        n_classes=info.n_classes,
        image_shape=list(info.image_shape),
        estimate=_estimate(context, preset, info),
    )


def _inspect(context: Context, upload: Upload, options: Options) -> DatasetInfo:
    try:
        return inspect_dataset(
            upload.path, limits=context.settings.dataset_limits, image_size=options.image_size
        )
    except DatasetError as exc:
        raise Refused(422, f"{upload.filename or 'the file'}: {exc}") from exc


def _estimate(context: Context, preset: str, info: DatasetInfo) -> CostEstimate:
    with context.reads() as session:
        return estimate_cost(
            session, context.settings.worker_device, preset, info.n_samples, info.image_shape
        )


def check_room(context: Context, tenant: str, *, declared_bytes: int = 0) -> None:
    """``Refused`` (429) when the tenant is at its quota already, or has no room for
    ``declared_bytes`` (the least the upload's declared length can hold): checked before an
    upload's body is read, and again, under the tenant's lock, when the audit is created."""
    try:
        with context.reads() as session:
            access.check_quota(session, tenant, context.settings, adding_bytes=declared_bytes)
    except access.QuotaExceeded as exc:
        raise Refused(429, str(exc)) from exc


def withdraw(context: Context, tenant: str, audit_id: uuid.UUID) -> AuditRead | None:
    """Cancel a queued or running audit, and answer with it; delete a finished one and its
    stored data, and answer None. ``LookupError`` when the tenant has no such audit."""
    with context.reads() as session:
        audit = queries.get_audit(session, audit_id, tenant=tenant)
        if audit is None:
            raise LookupError(f"no audit {audit_id}")
    if AuditStatus(audit.status).finished and lifecycle.delete_finished(context, audit_id):
        return None
    lifecycle.cancel(context, audit_id)
    with context.reads() as session:
        audit = queries.get_audit(session, audit_id, tenant=tenant)
        if audit is None:  # deleted meanwhile
            raise LookupError(f"no audit {audit_id}")
        return to_read(audit)


_EXTENSIONS = {"npz": "npz", "imagefolder": "zip", "parquet": "parquet"}


def _new_audit(
    tenant: str, upload: Upload, info: DatasetInfo, options: Options, preset: str
) -> Audit:
    audit_id = uuid.uuid4()
    return Audit(
        id=audit_id,
        tenant=tenant,
        name=options.name,
        preset=preset,
        seed=options.seed,
        image_size=options.image_size,
        dataset_format=info.format,
        dataset_filename=upload.filename or None,
        dataset_sha256=upload.sha256,
        dataset_bytes=upload.size,
        storage_key=f"audits/{audit_id}/dataset.{_EXTENSIONS[info.format]}",
        n_samples=info.n_samples,
        n_classes=info.n_classes,
        image_shape=list(info.image_shape),
        classes=info.classes,
        callback_url=options.callback_url,
    )
