"""Guest attester: evidence providers, a KBS protocol 0.4.0 client, and the ``teegate-attester`` CLI."""

from __future__ import annotations

from teegate.attester.client import InitDataFile, KbsClient, RetryPolicy, load_initdata
from teegate.attester.errors import (
    AttestationRefused,
    AttesterError,
    EvidenceUnavailable,
    ExitCode,
    KbsProtocolError,
    KbsTlsError,
    KbsUnreachable,
    ResourceMissing,
)
from teegate.attester.keys import KeyAlgorithm, TeeKey
from teegate.attester.providers import ProviderOptions, select_provider
from teegate.attester.uri import ResourceRef, parse_resource

__all__ = [
    "AttestationRefused",
    "AttesterError",
    "EvidenceUnavailable",
    "ExitCode",
    "InitDataFile",
    "KbsClient",
    "KbsProtocolError",
    "KbsTlsError",
    "KbsUnreachable",
    "KeyAlgorithm",
    "ProviderOptions",
    "ResourceMissing",
    "ResourceRef",
    "RetryPolicy",
    "TeeKey",
    "load_initdata",
    "parse_resource",
    "select_provider",
]
