"""The message as the MTA sent it to the milter, and the edits that turn it into another one.

A milter never hands a message back: it asks the MTA to change, delete and insert header
fields and to replace the body. gateway/actions.py decides what a marked message looks like
(as bytes, the same for every front door); this module works out the requests that make the
MTA's copy into exactly those bytes: inserts only, for fields prepended to passed mail, and
none at all when nothing changed (gateway.pass_headers = false).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway import actions
from gateway.milter import protocol as mp

Field = tuple[bytes, bytes]  # (name, value as the milter protocol carries it)


def _wire(value: bytes) -> bytes:
    """A header value in message form (CRLF folds) from the protocol's LF-separated lines."""
    return value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def reconstruct(fields: Sequence[Field], body: bytes, *, leadspc: bool) -> bytes:
    """The message bytes: with SMFIP_HDR_LEADSPC the header values keep their own leading
    white space, so a CRLF message comes back byte for byte; without it the MTA ate one space
    after each colon, and one is put back."""
    space = b"" if leadspc else b" "
    head = b"".join(name + b":" + space + _wire(value) + b"\r\n" for name, value in fields)
    return head + b"\r\n" + body


def _target_fields(block: bytes, leadspc: bool) -> list[Field]:
    out = []
    for fld in actions._fields(block):
        name, _, value = fld.partition(b":")
        value = value.removesuffix(b"\n").removesuffix(b"\r").replace(b"\r\n", b"\n")
        if not leadspc and value.startswith(b" "):
            value = value[1:]  # the MTA puts this one back
        out.append((name.rstrip(b" \t"), value))
    return out


def _body_of(rest: bytes) -> bytes:
    """The body after the blank line that split_headers leaves at the start of `rest`."""
    if rest.startswith(b"\r\n"):
        return rest[2:]
    if rest.startswith(b"\n"):
        return rest[1:]
    return rest


def edits(fields: Sequence[Field], body: bytes, target: bytes, *, leadspc: bool) -> list[bytes]:
    """Packets that make (fields, body) into target: changes and deletions first, the highest
    occurrence of a name first (so no request renumbers a later one), then insertions at the
    top, then the new body if it differs.

    Linear in the number of fields: the two header sections are aligned from their ends, a
    field kept where it matches, changed where only its value differs, deleted otherwise;
    what the target has above the aligned part is inserted at the top. actions.py only
    prepends fields, edits some in place and rewrites body parts, so this is also the
    shortest list for every message it makes; for any other target it is still exact.
    """
    block, rest = actions.split_headers(target)
    want = _target_fields(block, leadspc)
    seen: dict[bytes, int] = {}
    occurrence = []
    for name, _ in fields:
        key = name.lower()
        seen[key] = seen.get(key, 0) + 1
        occurrence.append(seen[key])
    out: list[bytes] = []
    i, j = len(fields) - 1, len(want) - 1
    while i >= 0:
        name, value = fields[i]
        if j >= 0 and want[j][0].lower() == name.lower():
            if want[j][1] != value:
                out.append(mp.change_header(occurrence[i], name, want[j][1]))
            j -= 1
        else:
            out.append(mp.change_header(occurrence[i], name, b""))
        i -= 1
    for k in range(j, -1, -1):
        out.append(mp.insert_header(0, *want[k]))
    new_body = _body_of(rest)
    if new_body != body:
        out.extend(mp.replace_body(new_body))
    return out
