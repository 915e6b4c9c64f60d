"""Signed anchors of the decision record, and where they go to leave the host.

A chain cannot see its tail cut or the whole file replaced by an older copy
(:mod:`duanka.serving.chain`); an anchor taken earlier and kept where the service's operator
cannot rewrite it can. An anchor is one line of JSON::

    {"duanka_anchor": 1, "at": "2026-12-04T09:00:00.000000+00:00", "key": "3f9c0a1b2c4d",
     "head": "decisions=ROWS:HEX,events=ROWS:HEX,responses=ROWS:HEX", "mac": "HEX"}

``head`` is :meth:`duanka.serving.chain.Head.text` (each table's row count and last chain
value), ``key`` names the audit key without revealing it, and ``mac`` is an HMAC-SHA256 of the
rest under a key derived from the chain key. Why that key rather than one of its own: an HMAC
can be checked only by whoever could also make one, so a separate anchor key would change
nothing about who can forge an anchor (the service, which signs, and the auditors, who check)
while adding a secret to hold. What makes anchors worth having is where they are kept: a file a
log shipper takes off the host (``DUANKA_AUDIT_ANCHOR_FILE``) or syslog
(``DUANKA_AUDIT_ANCHOR_SYSLOG``), read by someone other than the service's operator. The
signature lets an auditor tell the service's anchors from lines anyone could have added.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import logging.handlers
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from duanka.data.config import syslog_address
from duanka.serving.chain import Head

MARKER = "duanka_anchor"
VERSION = 1
_SEPARATOR = b"\x1f"


def key_id(chain_key: bytes) -> str:
    """12 hex characters naming the audit key in anchors, revealing nothing of it."""
    return hmac.new(chain_key, b"duanka/audit-key-id", hashlib.sha256).hexdigest()[:12]


def _anchor_key(chain_key: bytes) -> bytes:
    # its own key for anchors, so that no anchor MAC can ever equal a chain value
    return hmac.new(chain_key, b"duanka/audit-anchor-key", hashlib.sha256).digest()


def _mac(chain_key: bytes, at: str, key: str, head: str) -> str:
    message = _SEPARATOR.join(
        [b"duanka/audit-anchor", str(VERSION).encode(), at.encode(), key.encode(), head.encode()]
    )
    return hmac.new(_anchor_key(chain_key), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class SignedAnchor:
    """A head, when it was taken, and its signature (module docstring)."""

    at: str
    key: str
    head: Head
    mac: str

    def line(self) -> str:
        """The anchor as one line of JSON."""
        return json.dumps(
            {MARKER: VERSION, "at": self.at, "key": self.key, "head": self.head.text(), "mac": self.mac}
        )

    def problem(self, chain_key: bytes) -> str | None:
        """Why this anchor cannot be taken as the service's under ``chain_key``, or None."""
        if self.key != key_id(chain_key):
            return f"signed with another audit key (key {self.key}; this one is {key_id(chain_key)})"
        if not hmac.compare_digest(self.mac, _mac(chain_key, self.at, self.key, self.head.text())):
            return "its signature does not verify: the line was altered, or not made by the service"
        return None

    @classmethod
    def parse(cls, text: str) -> SignedAnchor:
        """Read :meth:`line` back, from where the anchor starts (a syslog line has a prefix).

        Raises
        ------
        ValueError
            No anchor, or one missing a field.
        """
        start = text.find("{")
        try:
            # the first JSON object: what follows it (syslog's NUL, a newline) is not the anchor's
            fields = json.JSONDecoder().raw_decode(text, start)[0] if start >= 0 else None
        except json.JSONDecodeError:
            fields = None
        if not isinstance(fields, dict) or fields.get(MARKER) != VERSION:
            raise ValueError(f"not a signed audit anchor (a line of JSON with {MARKER!r}: {VERSION})")
        try:
            return cls(
                str(fields["at"]), str(fields["key"]), Head.parse(str(fields["head"])), str(fields["mac"])
            )
        except KeyError as exc:
            raise ValueError(f"a signed audit anchor without {exc.args[0]!r}") from None


def sign(head: Head, chain_key: bytes, at: datetime | None = None) -> SignedAnchor:
    """``head`` signed under ``chain_key``, taken ``at`` (now when not given)."""
    taken = (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")
    key = key_id(chain_key)
    return SignedAnchor(taken, key, head, _mac(chain_key, taken, key, head.text()))


def read_anchors(path: Path) -> list[tuple[int, SignedAnchor]]:
    """Every signed anchor in ``path`` with its line number; lines without one (a syslog file's other
    messages) are passed over.

    Raises
    ------
    ValueError
        A line that names itself an anchor but cannot be read as one, or no anchor at all.
    OSError
        The file cannot be read.
    """
    anchors = []
    with Path(path).open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if MARKER not in line:
                continue
            try:
                anchors.append((number, SignedAnchor.parse(line)))
            except ValueError as exc:
                raise ValueError(f"{path}, line {number}: {exc}") from None
    if not anchors:
        raise ValueError(f"{path} holds no signed audit anchor")
    return anchors


class AnchorOutlet:
    """Where anchors go to leave the host: appended to a file, sent to syslog, or both.

    Parameters
    ----------
    file : Path, optional
        Appended to, one line per anchor, each synced to disk before :meth:`emit` returns.
    syslog : str, optional
        A syslog address (:func:`duanka.data.config.syslog_address`): ``HOST:PORT`` (UDP) or a
        socket path such as ``/dev/log``.

    Raises
    ------
    OSError
        The syslog host's name cannot be resolved.
    """

    def __init__(self, file: Path | None = None, syslog: str | None = None) -> None:
        self.file = file
        self._syslog = (
            None
            if syslog is None
            else logging.handlers.SysLogHandler(
                address=syslog_address(syslog), facility=logging.handlers.SysLogHandler.LOG_AUTH
            )
        )
        if self._syslog is not None:
            self._syslog.ident = "duanka-anchor: "

    @property
    def targets(self) -> list[str]:
        """What :meth:`emit` writes to, in words."""
        named = [] if self.file is None else [str(self.file)]
        return named + ([] if self._syslog is None else [f"syslog {self._syslog.address}"])

    def emit(self, anchor: SignedAnchor) -> None:
        """Append the anchor to the file and send it to syslog.

        Raises
        ------
        OSError
            The file cannot be written (syslog is best effort: UDP, or a socket that may be absent).
        """
        line = anchor.line()
        if self.file is not None:
            # 0640, not private: anchors hold no personal data, and a log shipper's group reads them
            fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, (line + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        if self._syslog is not None:
            self._syslog.handle(
                logging.makeLogRecord({"msg": line, "levelno": logging.INFO, "levelname": "INFO"})
            )

    def close(self) -> None:
        if self._syslog is not None:
            self._syslog.close()
