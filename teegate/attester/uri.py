"""Resource paths as trustee-attester accepts them: ``repo/type/tag`` or ``kbs:///repo/type/tag``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from teegate.errors import ConfigError

__all__ = ["ResourceRef", "parse_resource"]

#: Trustee's ``ResourceDesc`` segment grammar: no leading dot, no slash.
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_\-]+[A-Za-z0-9_\-.]*")
_MAX_PATH: Final = 1024


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """A KBS resource: repository, type, tag, and the KBS named in a ``kbs://host`` URI, if any."""

    repository: str
    type: str
    tag: str
    kbs_host: str | None = None
    query: str = ""

    @property
    def path(self) -> str:
        """``repo/type/tag``."""
        return f"{self.repository}/{self.type}/{self.tag}"


def parse_resource(text: str) -> ResourceRef:
    """Parse ``repo/type/tag``, ``/repo/type/tag``, ``kbs:///repo/type/tag`` or ``kbs://host:port/…``."""
    if len(text) > _MAX_PATH:
        raise ConfigError(f"resource path longer than {_MAX_PATH} characters")
    host: str | None = None
    query = ""
    path = text
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme != "kbs":
            raise ConfigError(
                f"resource URI scheme {parts.scheme!r} is not supported (use kbs:///repo/type/tag)"
            )
        host = parts.netloc or None
        path = parts.path
        query = parts.query
    segments = path.strip("/").split("/")
    if len(segments) != 3:
        raise ConfigError(f"resource path {text!r} must have exactly three segments: repo/type/tag")
    for name, segment in zip(("repository", "type", "tag"), segments, strict=True):
        if not _SEGMENT.fullmatch(segment):
            raise ConfigError(
                f"resource {name} {segment!r} is invalid: letters, digits, '_', '-', '.' only, "
                "not a leading '.'"
            )
    return ResourceRef(segments[0], segments[1], segments[2], host, query)
