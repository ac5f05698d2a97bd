"""`commhub attachment get ID [-o FILE]`, and the upload behind `commhub send|reply ... --attach FILE`."""

from __future__ import annotations

import argparse
import mimetypes
import re
import sys
from email.message import Message
from pathlib import Path

from ..client import ClientError, HubClient
from .common import EXIT_OK, add_group, connect, fail, network_flag, reports_errors, safe_text, server_flags


def upload_files(client: HubClient, paths: list[str], network_id: str | None) -> list[str]:
    """Upload each file (raw body, its type guessed from its name); the attachment ids, in order."""
    ids = []
    for name in paths:
        path = Path(name)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ClientError(0, "bad_file", f"cannot read {name}: {exc.strerror or exc}") from exc
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        ids.append(client.upload(path.name, data, content_type, network_id)["attachment_id"])
    return ids


def _served_name(disposition: str | None) -> str | None:
    """The filename a Content-Disposition header offers (filename* first), without any directory part."""
    if not disposition:
        return None
    header = Message()
    header["content-disposition"] = disposition
    name = header.get_filename()
    return re.split(r"[/\\]", name)[-1] if name else None


@reports_errors
def cmd_get(args: argparse.Namespace) -> int:
    """Download an attachment to -o FILE (- = stdout), or to its own name in the current directory."""
    with connect(args) as client:
        data, headers = client.download(f"/api/attachments/{args.attachment_id}",
                                        params={"network_id": args.network})
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return EXIT_OK
    target = Path(args.output or _served_name(headers.get("content-disposition")) or args.attachment_id)
    if args.output is None and target.exists():
        return fail(f"{target} exists; name another file with -o")
    target.write_bytes(data)
    print(safe_text(f"saved {len(data)} bytes to {target}"), file=sys.stderr)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add `attachment get`."""
    actions = add_group(sub, "attachment", "files sent with tasks, messages and replies")
    p = actions.add_parser("get", parents=[server_flags(), network_flag()], help="download an attachment",
                           description="Download an attachment by id (att_…) to -o FILE, or to its own name.")
    p.add_argument("attachment_id")
    p.add_argument("-o", "--output", metavar="FILE", help="where to save it (- = stdout; default: its own name, "
                                                           "never overwriting a file)")
    p.set_defaults(func=cmd_get)
