"""Expense receipts in the Harvest sandbox.

Harvest takes a receipt only as a file: "A receipt file to attach to the expense. If
including a receipt, you must submit a multipart/form-data request" (*Harvest API v2*,
create and update an expense; ``delete_receipt: true`` on update removes it). The sandbox
does the same: ``POST``/``PATCH /v2/expenses`` accept ``multipart/form-data`` (the other
fields as form fields, ``receipt`` as the file part) besides JSON; a JSON ``receipt`` that is
not ``null`` is refused, as no file can travel in it. Accepted files are Harvest's: ``.png``,
``.gif``, ``.pdf``, ``.jpg``, ``.jpeg`` (Harvest help, "Uploading a receipt"); a locked
expense (approved or invoiced) keeps its receipt.

The expense then shows ``receipt: {url, file_name, file_size, content_type}`` as in the
contract's example. Harvest's ``url`` is on the account's web domain
(``https://{ACCOUNT_SUBDOMAIN}.harvestapp.com/expenses/{id}/receipt``); the sandbox serves the
file at the same path under its own address, to a caller with the API's headers. A seed may
give ``receipt`` as that object without a file (its ``url`` made when absent).
"""

from __future__ import annotations

import base64
import mimetypes
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import PurePosixPath
from typing import Any

from closeloop.sandboxes.harvest.account import (
    Account,
    HarvestError,
    expense_locked_reason,
    is_locked,
    stamp,
)
from closeloop.sandboxes.harvest.fields import WRITABLE

#: Receipt files Harvest takes, by extension, with their content types.
RECEIPT_TYPES = {
    ".png": "image/png",
    ".gif": "image/gif",
    ".pdf": "application/pdf",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
}


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart request."""

    file_name: str
    content_type: str
    data: bytes


def parse_multipart(raw: bytes, content_type: str) -> tuple[dict[str, str], dict[str, Upload]]:
    """The form fields and files of a ``multipart/form-data`` body. Raises
    ``HarvestError(400)`` for a body that is not one."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + raw)
    if not message.is_multipart():
        raise HarvestError(400, "The body is not multipart/form-data")
    fields: dict[str, str] = {}
    files: dict[str, Upload] = {}
    for part in message.iter_parts():
        assert isinstance(part, Message)
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        data = part.get_payload(decode=True)
        payload = data if isinstance(data, bytes) else b""
        file_name = part.get_filename()
        if file_name is not None:
            files[name] = Upload(
                PurePosixPath(file_name.replace("\\", "/")).name,
                part.get_content_type(),
                payload,
            )
        else:
            fields[name] = payload.decode(part.get_content_charset() or "utf-8")
    return fields, files


def form_values(resource: str, fields: dict[str, str]) -> dict[str, Any]:
    """Form fields as the JSON values the resource's fields take (numbers, booleans); a value
    that does not convert stays text, for the usual 422."""
    types = {name: kinds for name, (kinds, _) in WRITABLE.get(resource, {}).items()}
    types["delete_receipt"] = (bool,)
    values: dict[str, Any] = {}
    for name, text in fields.items():
        kinds = types.get(name, (str,))
        value: Any = text
        if bool in kinds and text.lower() in ("true", "false", "1", "0"):
            value = text.lower() in ("true", "1")
        elif int in kinds and text.lstrip("-").isdigit():
            value = int(text)
        elif float in kinds:
            try:
                value = float(text)
            except ValueError:
                value = text
        values[name] = value
    return values


def check_json_receipt(body: dict[str, Any]) -> None:
    """Drop a JSON ``receipt: null``; refuse any other JSON receipt (422)."""
    if body.pop("receipt", None) is not None:
        raise HarvestError(
            422, "Receipt must be uploaded as a file in a multipart/form-data request"
        )


def attach(account: Account, expense_id: int, upload: Upload, root_url: str) -> None:
    """Keep ``upload`` as the expense's receipt (replacing one). Raises ``HarvestError(422)``
    for a file type Harvest does not take, or a locked expense."""
    expense = account.get("expenses", expense_id)
    extension = PurePosixPath(upload.file_name).suffix.lower()
    if extension not in RECEIPT_TYPES:
        raise HarvestError(422, "Receipt must be a .png, .gif, .pdf, .jpg or .jpeg file")
    _unlocked(account, expense)
    content_type = upload.content_type
    if content_type in ("", "application/octet-stream", "text/plain"):
        content_type = RECEIPT_TYPES[extension]
    receipt = {
        "url": f"{root_url}/expenses/{expense_id}/receipt",
        "file_name": upload.file_name,
        "file_size": len(upload.data),
        "content_type": content_type,
    }
    account.put(
        "expenses",
        {
            **expense,
            "receipt": receipt,
            "receipt_blob": base64.b64encode(upload.data).decode("ascii"),
            "updated_at": stamp(account.clock()),
        },
    )


def remove(account: Account, expense_id: int) -> None:
    """``delete_receipt: true``: the expense has no receipt any more (422 when locked)."""
    expense = account.get("expenses", expense_id)
    if expense.get("receipt") is None:
        return
    _unlocked(account, expense)
    kept = {k: v for k, v in expense.items() if k != "receipt_blob"}
    account.put("expenses", {**kept, "receipt": None, "updated_at": stamp(account.clock())})


def seeded(record: dict[str, Any], root_url: str) -> dict[str, Any] | None:
    """A seeded receipt as the API shows it: its ``url`` made when absent and the seeded
    expense has an ``id`` (else ``null``, which the contract allows)."""
    receipt = record.get("receipt")
    if not isinstance(receipt, dict):
        return None
    file_name = str(receipt.get("file_name") or "receipt.pdf")
    guessed = mimetypes.guess_type(file_name)[0] or "application/pdf"
    made = f"{root_url}/expenses/{record['id']}/receipt" if record.get("id") else None
    return {
        "url": receipt.get("url") or made,
        "file_name": file_name,
        "file_size": receipt.get("file_size"),
        "content_type": receipt.get("content_type") or guessed,
    }


def content(account: Account, expense_id: int) -> tuple[bytes, str, str]:
    """``(bytes, content type, file name)`` of an expense's receipt. Raises
    ``HarvestError(404)`` when it has none (or only a seeded description)."""
    expense = account.get("expenses", expense_id)
    receipt, blob = expense.get("receipt"), expense.get("receipt_blob")
    if not receipt or blob is None:
        raise HarvestError(404, "Not Found")
    return base64.b64decode(blob), str(receipt["content_type"]), str(receipt["file_name"])


def _unlocked(account: Account, expense: dict[str, Any]) -> None:
    if is_locked(account, expense):
        reason = expense_locked_reason(account, expense)
        raise HarvestError(422, f"This expense is locked: {reason}")
