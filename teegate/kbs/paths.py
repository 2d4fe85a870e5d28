"""Where the KBS keeps its state on disk by default."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "ADMIN_KEY_FILENAME",
    "ADMIN_TOKEN_FILENAME",
    "admin_key_path",
    "admin_token_path",
    "default_data_dir",
]

#: File name of the development admin token inside the data directory.
ADMIN_TOKEN_FILENAME = "admin-token"  # noqa: S105 - a file name, not a secret
#: File name of the generated admin signing key (Ed25519 PEM) inside the data directory.
ADMIN_KEY_FILENAME = "admin-key.pem"


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$TEEGATE_DATA_DIR`` if set, else ``$XDG_DATA_HOME/teegate/kbs`` (``~/.local/share/teegate/kbs``)."""
    env = os.environ if environ is None else environ
    explicit = env.get("TEEGATE_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path(env.get("HOME", "~")).expanduser() / ".local" / "share"
    return base / "teegate" / "kbs"


def admin_token_path(data_dir: Path | None = None) -> Path:
    """The admin token a ``--dev`` server writes: ``<data-dir>/admin-token``."""
    return (data_dir if data_dir is not None else default_data_dir()) / ADMIN_TOKEN_FILENAME


def admin_key_path(data_dir: Path | None = None) -> Path:
    """The admin signing key ``kbs serve`` generates once: ``<data-dir>/admin-key.pem``."""
    return (data_dir if data_dir is not None else default_data_dir()) / ADMIN_KEY_FILENAME
