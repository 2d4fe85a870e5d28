"""KBS storage: the contract in :mod:`.base`, backends in :mod:`.sql`, :mod:`.directory`, :mod:`.vault`."""

from __future__ import annotations

from teegate.kbs.storage.base import (
    RESOURCE_POLICY_ID,
    Backend,
    InvalidName,
    NotFoundError,
    PolicyKind,
    PolicyNotFound,
    PolicyStore,
    ReferenceValueNotFound,
    ReferenceValueStore,
    ResourceNotFound,
    ResourcePath,
    ResourceStore,
    StateBackend,
    Storage,
    StorageReadOnly,
    StorageSettings,
    StorageUnavailable,
    StoredPolicy,
    ValueTooLarge,
    open_storage,
)

__all__ = [
    "RESOURCE_POLICY_ID",
    "Backend",
    "InvalidName",
    "NotFoundError",
    "PolicyKind",
    "PolicyNotFound",
    "PolicyStore",
    "ReferenceValueNotFound",
    "ReferenceValueStore",
    "ResourceNotFound",
    "ResourcePath",
    "ResourceStore",
    "StateBackend",
    "Storage",
    "StorageReadOnly",
    "StorageSettings",
    "StorageUnavailable",
    "StoredPolicy",
    "ValueTooLarge",
    "open_storage",
]
