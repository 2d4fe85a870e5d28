"""The KBS policy engine: Rego attestation policies → EAR appraisals, Rego resource policy → decisions.

Trustee-compatible (shared/spec/kbs-protocol.md §3.5, §3.6):

* **Attestation policy** (package ``policy``): input is the verifier's claims transformed as
  Trustee's broker does (``input.<tee>``, ``report_data``, ``runtime_data_claims``,
  ``init_data``, ``init_data_claims``); ``data.policy.trust_claims`` is an AR4SI vector,
  ``data.policy.extensions`` optional EAR extensions. Reference values come from the RVPS through
  the ``query_reference_value(name)`` builtin (``null`` when absent) or, for older policies,
  ``data.reference.<name>``. Policy id ``P`` evaluates ``P_<tee class>`` (``default`` →
  ``default_cpu``), falling back to ``P`` itself.
* **Resource policy**: input is the verified token's claims, data is
  ``{"plugin", "resource-path": [repo, type, tag], "query": {}}``; ``data.policy.allow`` must be
  ``true``. Any evaluation error denies.
* teegate extension: a policy may define ``data.policy.reasons`` (a set of strings); it feeds
  explanations and the audit log, and Trustee ignores it.

Policies are compiled once per ``(kind, id, version)`` (versions never repeat, so the cache is
safe across replicas). The store's ``version()`` answer is reused for ``refresh_seconds``
(default 1 s, as the RVPS cache): a policy set through this process applies to its next request,
one set through another replica within that time; 0 asks the store on every request. Built-in policies
(package data in :mod:`teegate.kbs.policies`) apply when the store holds none under that id.
Evaluation is synchronous on the caller's thread (tens of microseconds); reference values are
fetched before evaluation (names found in the policy text) and any name the policy asks for
dynamically is fetched and the policy re-evaluated, so no evaluation blocks on I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import functools
import hashlib
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

import orjson
import regorus

from teegate.errors import CollateralUnavailable, EvidenceError, PolicyDenied
from teegate.kbs.rvps import Rvps, RvpsError
from teegate.kbs.storage.base import (
    MAX_POLICY_BYTES,
    RESOURCE_POLICY_ID,
    PolicyKind,
    PolicyNotFound,
    PolicyStore,
    ReferenceValueStore,
    ResourcePath,
    check_policy_text,
    validate_policy_id,
)

__all__ = [
    "AR4SI_CLAIMS",
    "ATTESTATION_BUILTINS",
    "DEFAULT_ATTESTATION_POLICY",
    "MAX_COMPILED_POLICIES",
    "MAX_EXPLANATION_ITEMS",
    "MAX_REFERENCE_QUERIES",
    "RESOURCE_BUILTINS",
    "TEE_CLASSES",
    "Appraisal",
    "Decision",
    "PolicyEngine",
    "PolicyEvaluationError",
    "PolicySyntaxError",
    "PolicyVm",
    "builtin_policy_text",
    "check_policy",
    "status_from_trust_vector",
    "trust_tier",
]

_log = logging.getLogger("teegate.kbs.policy")

#: AR4SI trustworthiness claims in EAR order: (EAR/Rego name, Python name).
AR4SI_CLAIMS: Final[tuple[tuple[str, str], ...]] = (
    ("instance-identity", "instance_identity"),
    ("configuration", "configuration"),
    ("executables", "executables"),
    ("file-system", "file_system"),
    ("hardware", "hardware"),
    ("runtime-opaque", "runtime_opaque"),
    ("storage-opaque", "storage_opaque"),
    ("sourced-data", "sourced_data"),
)
_EAR_TO_PY: Final = dict(AR4SI_CLAIMS)
_PY_TO_EAR: Final = {py: ear for ear, py in AR4SI_CLAIMS}

#: Evidence TEE name → Trustee tee class (EAR submodule prefix and policy suffix).
TEE_CLASSES: Final[Mapping[str, str]] = {
    "tdx": "cpu",
    "sgx": "cpu",
    "snp": "cpu",
    "sample": "cpu",
    "az-snp-vtpm": "cpu",
    "az-tdx-vtpm": "cpu",
    "cca": "cpu",
    "csv": "cpu",
    "se": "cpu",
    "tpm": "cpu",
    "sampledevice": "gpu",
    "nvidia": "gpu",
    "hygondcu": "dcu",
    "nvidia-dpu": "nvidia-dpu",
}

#: The policy id the KBS asks for (Trustee's CoCo AS always asks for "default").
DEFAULT_ATTESTATION_POLICY: Final = "default"
#: Built-in attestation policies (id → package file); a stored policy of the same id wins.
ATTESTATION_BUILTINS: Final[Mapping[str, str]] = {
    "default_cpu": "default_cpu.rego",
    "strict_cpu": "strict_cpu.rego",
}
#: Built-in resource policies (name → package file). "default" applies when none is stored
#: (or "dev" in the development profile); the others are what `set-resource-policy` can upload.
RESOURCE_BUILTINS: Final[Mapping[str, str]] = {
    "default": "resource_default.rego",
    "trustee-default": "resource_trustee_default.rego",
    "allow-all": "resource_allow_all.rego",
    "deny-all": "resource_deny_all.rego",
    "affirming": "resource_affirming.rego",
    "dev": "resource_dev.rego",
}

#: Most compiled policies kept (LRU); old versions fall out as new ones are set.
MAX_COMPILED_POLICIES: Final = 64
#: How long a policy version (and a reference value) read from the store is used before it is
#: read again: how long a change made through another replica may take to apply here.
DEFAULT_REFRESH_SECONDS: Final = 1.0
_MAX_VERSION_ENTRIES: Final = 1024
#: Most distinct reference values one evaluation may ask for.
MAX_REFERENCE_QUERIES: Final = 256
#: Rounds of "fetch what the policy asked for dynamically, then re-evaluate".
_MAX_RV_ROUNDS: Final = 4
#: Most reasons / trust-vector notes carried in one explanation.
MAX_EXPLANATION_ITEMS: Final = 32
_MAX_REASON_CHARS: Final = 300

_TRUST_CLAIMS_RULE: Final = "data.policy.trust_claims"
_EXTENSIONS_RULE: Final = "data.policy.extensions"
_ALLOW_RULE: Final = "data.policy.allow"
_REASONS_RULE: Final = "data.policy.reasons"
_NOT_A_RULE: Final = "not a valid rule path"

_RV_CALL_RE = re.compile(r"query_reference_value\(\s*\"((?:[^\"\\]|\\.)*)\"\s*\)")
_DATA_REF_DOT_RE = re.compile(r"data\.reference\.([A-Za-z_][A-Za-z0-9_]*)")
_DATA_REF_IDX_RE = re.compile(r"data\.reference\[\s*\"((?:[^\"\\]|\\.)*)\"\s*\]")
_DATA_REF_ANY_RE = re.compile(r"data\.reference\b")


#: Any call of the reference-value builtin (literal or not).
_RV_ANY_CALL_RE = re.compile(r"query_reference_value\s*\(")
#: The VM has no host-function extensions: for it, ``query_reference_value`` is this Rego
#: function over the prefetched values, put into the data document under _VM_RV_KEY.
_VM_RV_KEY: Final = "teegate.reference_values"
_VM_SHIM_ID: Final = "teegate/query_reference_value.rego"
_VM_SHIM: Final = f"""package policy

query_reference_value(name) := object.get(data["{_VM_RV_KEY}"], name, null)
"""
#: How the VM writes an undefined value (alone or inside a collection) in its JSON answers.
_VM_UNDEFINED_JSON: Final = '"<undefined>"'


class PolicyVm(enum.Enum):
    """Which policies are evaluated on regorus's compiled virtual machine (RVM).

    Every policy is compiled by regorus's interpreter first (syntax, rules, unknown functions:
    the checks and messages of ``set``). A policy that may also run on the VM is compiled to VM
    bytecode once per version and evaluated there (an appraisal about twice as fast through the
    engine, bench/policy.py); whenever the VM's answer is undefined or the VM cannot answer, the
    interpreter evaluates it again and its answer stands, so errors keep the interpreter's
    messages and deny.

    The VM differs from the interpreter in one way that matters for policies written to
    "default allow, deny if …": where the interpreter stops with an error (conflicting rule
    values, a builtin failing, e.g. a division by zero), the VM treats that expression as
    undefined (as OPA does by default), so a ``not`` or a ``default`` can turn it into a
    decision. ``BUILTIN`` (the default) runs only teegate's built-in policies on the VM (they are
    written so that no such expression exists, and a differential test checks them against the
    interpreter); ``ALL`` runs every policy the VM can compile (for policies reviewed for that);
    ``OFF`` runs everything on the interpreter.
    """

    BUILTIN = "builtin"
    ALL = "all"
    OFF = "off"


#: What each built-in policy reads of its input, as a tree: a key names the subtree kept below
#: it, ``"*"`` every key of an object, ``True`` the value whole; where the input is not an
#: object the tree expects, the value is kept whole. regorus then parses the part a policy looks
#: at (a few hundred bytes) rather than every claim, and answers as it would over the whole
#: input (test_policy_projection.py compares verdicts, trust vectors, extensions and reasons over
#: generated claims, on the VM and the interpreter). Bound to the built-in's exact text (its
#: digest): an edited or custom policy gets the whole input. Each tree was written for the text
#: whose SHA-384 starts as in _READS_WRITTEN_FOR: a built-in file changed since gets the whole
#: input until its tree is reviewed and the digest updated (a test fails meanwhile).
_TDX_READS: Final[Mapping[str, Any]] = {
    "quote": {
        "header": {"tee_type": True, "vendor_id": True},
        "body": {"mr_td": True, "rtmr_1": True, "rtmr_2": True, "xfam": True},
    },
    "collateral_expiration_status": True,
    "tcb_status": True,
    "td_attributes": True,
    "uefi_event_logs": True,
}
_SGX_READS: Final[Mapping[str, Any]] = {
    "header": {"vendor_id": True},
    "body": {"attributes.flags": True, "mr_enclave": True, "mr_signer": True, "isv_prod_id": True},
    "collateral_expiration_status": True,
    "tcb_status": True,
}
_CPU_POLICY_READS: Final[Mapping[str, Any]] = {
    "sample": True,
    "tdx": _TDX_READS,
    "sgx": _SGX_READS,
    "init_data_claims": {"agent_policy_claims": {"containers": True}},
}
_AFFIRMING_READS: Final[Mapping[str, Any]] = {"submods": {"*": {"ear.status": True}}}
_INPUT_READS: Final[Mapping[PolicyKind, Mapping[str, Mapping[str, Any]]]] = {
    PolicyKind.ATTESTATION: {"default_cpu": _CPU_POLICY_READS, "strict_cpu": _CPU_POLICY_READS},
    PolicyKind.RESOURCE: {
        "default": _AFFIRMING_READS,
        "affirming": _AFFIRMING_READS,
        "trustee-default": {"submods": {"cpu0": {"ear.veraison.annotated-evidence": {"sample": True}}}},
        "allow-all": {},
        "deny-all": {},
        "dev": {
            "submods": {
                "*": {
                    "ear.status": True,
                    "ear.veraison.annotated-evidence": {
                        "sample": True,
                        "tdx": {"simulated": True},
                        "sgx": {"simulated": True},
                        "runtime_data_claims": {"tee-pubkey": True},
                    },
                }
            }
        },
    },
}


_READS_WRITTEN_FOR: Final[Mapping[tuple[PolicyKind, str], str]] = {
    (PolicyKind.ATTESTATION, "default_cpu"): "e5a50c127e20a570",
    (PolicyKind.ATTESTATION, "strict_cpu"): "204070e48d52a217",
    (PolicyKind.RESOURCE, "default"): "a81160f966a02b7a",
    (PolicyKind.RESOURCE, "affirming"): "fb65f422751ad88b",
    (PolicyKind.RESOURCE, "trustee-default"): "e895f749e81f91c1",
    (PolicyKind.RESOURCE, "allow-all"): "e0c7547875bb1c42",
    (PolicyKind.RESOURCE, "deny-all"): "f5bfb63308c49d5f",
    (PolicyKind.RESOURCE, "dev"): "27ad053d30de594f",
}


@functools.cache
def _input_reads() -> dict[tuple[PolicyKind, str], Mapping[str, Any]]:
    """(kind, built-in policy digest) → what that policy reads of its input (only for built-in
    texts their tree was written for)."""
    found: dict[tuple[PolicyKind, str], Mapping[str, Any]] = {}
    for kind, table in _INPUT_READS.items():
        for name, reads in table.items():
            digest = _policy_digest(builtin_policy_text(kind, name))
            if digest.startswith(_READS_WRITTEN_FOR.get((kind, name), "-")):
                found[(kind, digest)] = reads
    return found


def project_input(value: Any, reads: Mapping[str, Any]) -> Any:
    """The part of ``value`` a policy that reads ``reads`` can see (see _INPUT_READS)."""
    if not isinstance(value, dict):
        return value
    wildcard = reads.get("*")
    if wildcard is not None:
        return {k: v if wildcard is True else project_input(v, wildcard) for k, v in value.items()}
    return {
        k: value[k] if sub is True else project_input(value[k], sub) for k, sub in reads.items() if k in value
    }


def _policy_digest(text: str) -> str:
    """A policy text's identity: SHA-384 (hex) of its UTF-8."""
    return hashlib.sha384(text.encode("utf-8")).hexdigest()


@functools.cache
def _builtin_digests() -> frozenset[str]:
    texts = [builtin_policy_text(PolicyKind.ATTESTATION, n) for n in ATTESTATION_BUILTINS]
    texts += [builtin_policy_text(PolicyKind.RESOURCE, n) for n in RESOURCE_BUILTINS]
    return frozenset(_policy_digest(t) for t in texts)


class PolicySyntaxError(EvidenceError):
    """A policy does not compile or does not define what its kind needs (HTTP 400, ParsePolicyError)."""

    trustee_error = "ParsePolicyError"
    #: The stored version that failed, when the policy came from the store.
    policy_version: int | None = None


class PolicyEvaluationError(PolicyDenied):
    """An attestation policy could not be evaluated or gave an unusable result: no token is issued."""

    trustee_error = "PolicyEngineError"


# --- AR4SI tiers ------------------------------------------------------------------------------

_TIER_ORDER: Final = {"none": 0, "affirming": 1, "warning": 2, "contraindicated": 3}

# Short meanings of the AR4SI values teegate's policies use (draft-ietf-rats-ar4si), for
# explanations; other values are described by their tier only.
_VALUE_MEANINGS: Final[Mapping[tuple[str, int], str]] = {
    ("instance_identity", 2): "recognized instance",
    ("instance_identity", 96): "recognized but untrustworthy instance",
    ("instance_identity", 97): "unrecognized instance",
    ("configuration", 2): "approved configuration",
    ("configuration", 3): "configuration without known vulnerabilities",
    ("configuration", 32): "configuration with known vulnerabilities",
    ("configuration", 36): "configuration elements unavailable (no reference values matched)",
    ("configuration", 96): "unsupportable configuration (e.g. debug mode)",
    ("executables", 2): "approved boot and runtime",
    ("executables", 3): "approved boot-time executables",
    ("executables", 4): "approved boot measurements (event log not matched)",
    ("executables", 32): "known executables with vulnerabilities",
    ("executables", 33): "unrecognized executables (measurements not among reference values)",
    ("executables", 96): "contraindicated executables",
    ("hardware", 2): "genuine hardware and firmware, TCB up to date",
    ("hardware", 32): "genuine hardware with known vulnerabilities (TCB needs attention)",
    ("hardware", 96): "hardware contraindicated (e.g. TCB out of date under a strict policy)",
    ("hardware", 97): "unrecognized hardware or firmware (reference values or collateral not matched)",
    ("file_system", 2): "approved file system",
    ("runtime_opaque", 2): "encrypted memory",
    ("storage_opaque", 2): "hardware-protected storage",
    ("sourced_data", 2): "data from affirming sources",
}


def trust_tier(value: int) -> str:
    """The AR4SI tier of one trustworthiness value (as veraison's EAR library computes it)."""
    if -1 <= value <= 1:
        return "none"
    if -32 <= value < 32:
        return "affirming"
    if -96 <= value < 96:
        return "warning"
    return "contraindicated"


def status_from_trust_vector(vector: Mapping[str, int]) -> str:
    """EAR status: the worst tier among the claims set (``none`` when all say nothing)."""
    status = "none"
    for value in vector.values():
        tier = trust_tier(value)
        if _TIER_ORDER[tier] > _TIER_ORDER[status]:
            status = tier
    return status


def _describe(name: str, value: int) -> str:
    meaning = _VALUE_MEANINGS.get((name, value))
    tier = trust_tier(value)
    return f"{name}={value} ({tier}{': ' + meaning if meaning else ''})"


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Appraisal:
    """One EAR appraisal (one submodule of the token).

    ``policy_id`` is the id asked for (what Trustee writes to ``ear.appraisal-policy-id``);
    ``evaluated_policy_id`` the policy actually run (``default_cpu``). ``trust_vector`` holds all
    eight AR4SI claims by Python name (0 when the policy set none); ``annotated_evidence`` is the
    policy input (Trustee's ``ear.veraison.annotated-evidence``).
    """

    policy_id: str
    status: str
    trust_vector: dict[str, int]
    explanation: dict[str, Any]
    evaluated_policy_id: str = ""
    policy_version: int | None = None
    tee: str = ""
    tee_class: str = "cpu"
    annotated_evidence: dict[str, Any] = field(default_factory=dict)
    extensions: list[dict[str, Any]] = field(default_factory=list)
    claims_set: tuple[str, ...] = ()

    def ear_trust_vector(self) -> dict[str, int]:
        """The ``ear.trustworthiness-vector`` object (EAR names, only the claims the policy set)."""
        names = self.claims_set or tuple(py for _, py in AR4SI_CLAIMS)
        return {_PY_TO_EAR[py]: self.trust_vector[py] for py in (p for _, p in AR4SI_CLAIMS) if py in names}

    def ear_submod(self) -> dict[str, Any]:
        """The EAR submodule object as Trustee's broker serialises it (extensions by name)."""
        submod: dict[str, Any] = {
            "ear.status": self.status,
            "ear.trustworthiness-vector": self.ear_trust_vector(),
            "ear.appraisal-policy-id": self.policy_id,
            "ear.veraison.annotated-evidence": self.annotated_evidence,
        }
        for extension in self.extensions:
            submod[str(extension["name"])] = extension["value"]
        return submod


@dataclass(frozen=True, slots=True)
class Decision:
    """A resource-policy decision; ``reason`` is one line for logs, ``reasons`` the policy's own."""

    allowed: bool
    policy_id: str
    reason: str
    policy_version: int | None = None
    reasons: tuple[str, ...] = ()


# --- compilation ------------------------------------------------------------------------------


def _engine_message(exc: BaseException) -> str:
    """regorus errors carry a Rust backtrace when RUST_BACKTRACE is set; keep the message only."""
    text = str(exc).split("\nStack backtrace:", 1)[0].strip()
    return text[:2000] or type(exc).__name__


def builtin_policy_text(kind: PolicyKind, name: str) -> str:
    """The text of a built-in policy (``default_cpu``, ``strict_cpu``; ``default``, ``allow-all``, …)."""
    table = ATTESTATION_BUILTINS if kind is PolicyKind.ATTESTATION else RESOURCE_BUILTINS
    filename = table.get(name)
    if filename is None:
        raise PolicyNotFound(f"no built-in {kind.value} policy {name!r}; built-ins: {sorted(table)}")
    return _package_text(filename)


@functools.cache
def _package_text(filename: str) -> str:
    return resources.files("teegate.kbs.policies").joinpath(filename).read_text(encoding="utf-8")


def _strip_comments(text: str) -> str:
    """Rego text without its ``#`` comments (string and raw-string literals kept)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif ch in '"`':
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if ch == '"' and text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in '#"`':
                j += 1
            out.append(text[i:j])
            i = j
    return "".join(out)


def _unescape(literal: str) -> str:
    try:
        value = json.loads(f'"{literal}"')
    except ValueError:
        return literal
    return value if isinstance(value, str) else literal


# regorus engines are thread-affine (PyO3 "unsendable"): dropping one on another thread is an
# error. An engine is held only by its _EngineBox (never in a reference cycle of this module's
# making), so it is normally freed by reference counting on the thread that created and used it.
# When the last reference goes away on another thread (the garbage collector can run anywhere,
# e.g. collecting an application object graph after its server thread stopped), the box hands
# the engine to its owner thread's _Graveyard instead, and the owner drops it at its next policy
# compilation or evaluation, or when it exits. Only if the owner has already exited is the
# engine leaked (never dropped on the wrong thread). No caller needs to run the garbage
# collector on a particular thread.
class _Graveyard:
    """Engines of one thread released on other threads, waiting for their owner to drop them."""

    __slots__ = ("_engines", "_lock", "_open")

    def __init__(self) -> None:
        self._engines: list[Any] = []
        self._lock = threading.Lock()
        self._open = True

    def bury(self, engine: Any) -> bool:
        """Keep ``engine`` for its owner; False when the owner thread has exited."""
        with self._lock:
            if self._open:
                self._engines.append(engine)
            return self._open

    def pending(self) -> int:
        """Engines waiting to be dropped."""
        return len(self._engines)

    def sweep(self) -> None:
        """Drop the waiting engines (call on the owner thread only)."""
        if self._engines:
            with self._lock:
                self._engines = []

    def close(self) -> None:
        """The owner thread is exiting: drop what waits (on it) and accept no more."""
        with self._lock:
            self._open = False
            self._engines = []


class _GraveyardCloser:
    """Held only by the owner thread's thread-local state, which that thread clears as it exits."""

    __slots__ = ("graveyard",)

    def __init__(self, graveyard: _Graveyard) -> None:
        self.graveyard = graveyard

    def __del__(self) -> None:
        self.graveyard.close()


class _ThreadGraveyard(threading.local):
    """This thread's graveyard (thread-local by nature: one per engine-owning thread)."""

    def __init__(self) -> None:
        self.graveyard = _Graveyard()
        self._closer = _GraveyardCloser(self.graveyard)


_GRAVEYARDS: Final = _ThreadGraveyard()


class _EngineBox:
    """The thread-affine regorus objects of one compiled policy: the interpreter engine and,
    when the policy runs on the VM, its program and VM."""

    __slots__ = ("_graveyard", "engine", "program", "vm")

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.program: Any = None
        self.vm: Any = None
        # The owner thread is known by its graveyard (thread-local state), not by its ident:
        # the OS reuses a thread's ident for a later thread, and PyO3 tells them apart.
        self._graveyard = _GRAVEYARDS.graveyard

    def __del__(self) -> None:
        held = [o for o in (self.engine, self.program, self.vm) if o is not None]
        self.engine = self.program = self.vm = None
        if not held or _GRAVEYARDS.graveyard is self._graveyard:
            return  # dropped here, on its own thread
        for obj in held:
            if not self._graveyard.bury(obj):
                ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))  # owner gone: leaked, not dropped


class _RvLookup:
    """The ``query_reference_value`` builtin: serves prefetched values, records what was missing.

    Held by the engine; holds nothing that leads back to it (no reference cycle).
    """

    __slots__ = ("asked", "values")

    def __init__(self) -> None:
        self.values: Mapping[str, Any] = {}
        self.asked: set[str] = set()

    def __call__(self, name: Any) -> Any:
        if not isinstance(name, str):
            raise ValueError("query_reference_value takes one string argument")
        if name in self.values:
            return self.values[name]
        self.asked.add(name)
        return None


class _Compiled:
    """One compiled policy version: a regorus engine plus what it needs from the RVPS."""

    def __init__(
        self,
        kind: PolicyKind,
        policy_id: str,
        version: int | None,
        text: str,
        vm: PolicyVm = PolicyVm.BUILTIN,
    ) -> None:
        self.kind = kind
        self.policy_id = policy_id
        self.version = version
        self.digest = _policy_digest(text)
        #: What of its input this policy reads, when it is a built-in (None: all of it).
        self.input_reads: Mapping[str, Any] | None = _input_reads().get((kind, self.digest))
        self.lock = threading.Lock()
        self._lookup = _RvLookup()
        self._data: dict[str, Any] | None = None  # the data document the engine holds now
        self._vm_data: bytes | None = None  # the data document the VM holds now (JSON)
        self._vm_rules: frozenset[str] = frozenset()
        self._vm_failure_logged = False
        _GRAVEYARDS.graveyard.sweep()
        self._box = _EngineBox(regorus.Engine())
        problem = self._compile(text)
        if problem is not None:
            raise PolicySyntaxError(problem)
        literal_calls = _RV_CALL_RE.findall(text)
        self.rv_names = (
            frozenset(_unescape(m) for m in literal_calls)
            | frozenset(_DATA_REF_DOT_RE.findall(text))
            | frozenset(_unescape(m) for m in _DATA_REF_IDX_RE.findall(text))
        )
        self.uses_data_reference = bool(_DATA_REF_ANY_RE.search(text))
        # data.reference used other than with literal names: the whole RV set is loaded.
        stripped = _DATA_REF_IDX_RE.sub("", _DATA_REF_DOT_RE.sub("", text))
        self.wants_all_references = bool(_DATA_REF_ANY_RE.search(stripped))
        code = _strip_comments(text)
        #: Why the policy is evaluated by the interpreter only (None: it runs on the VM).
        self.vm_refusal: str | None = self._compile_vm(
            text, vm, dynamic_rvs=len(_RV_ANY_CALL_RE.findall(code)) != len(_RV_CALL_RE.findall(code))
        )

    @property
    def on_vm(self) -> bool:
        """Whether evaluations run on regorus's VM (else its interpreter)."""
        return self._box.vm is not None

    def _compile_vm(self, text: str, mode: PolicyVm, *, dynamic_rvs: bool) -> str | None:
        """Compile the VM program when ``mode`` and the policy allow it; else say why not."""
        if mode is PolicyVm.OFF:
            return "policy_vm = off"
        if mode is PolicyVm.BUILTIN and self.digest not in _builtin_digests():
            return "not a built-in policy (policy_vm = builtin)"
        if self.uses_data_reference:
            return "reads data.reference (reference values are asked for as they are used)"
        if dynamic_rvs:
            return "asks query_reference_value for computed names"
        if len(self.rv_names) > MAX_REFERENCE_QUERIES:
            return f"names more than {MAX_REFERENCE_QUERIES} reference values"
        main = _TRUST_CLAIMS_RULE if self.kind is PolicyKind.ATTESTATION else _ALLOW_RULE
        entry_points = [main]
        if self.has_extensions:
            entry_points.append(_EXTENSIONS_RULE)
        if self.has_reasons:
            entry_points.append(_REASONS_RULE)
        box = self._box
        try:
            box.program = regorus.Program.compile_from_modules(
                "{}",
                [(f"{self.kind.value}/{self.policy_id}.rego", text), (_VM_SHIM_ID, _VM_SHIM)],
                entry_points,
            )
            box.vm = regorus.Rvm()
            box.vm.load_program(box.program)
        except (RuntimeError, ValueError) as exc:
            box.program = box.vm = None
            return f"the VM cannot compile it: {_engine_message(exc)[:300]}"
        self._vm_rules = frozenset(entry_points)
        return None

    def _evaluate_vm(
        self, input_value: Any, data: dict[str, Any], values: Mapping[str, Any], rules: Sequence[str]
    ) -> dict[str, Any] | None:
        """Results from the VM; None when the interpreter must answer (undefined, VM failure)."""
        box = self._box
        vm = box.vm
        if vm is None or not self._vm_rules.issuperset(rules):
            return None
        try:
            document = orjson.dumps({**data, _VM_RV_KEY: {k: v for k, v in values.items() if v is not None}})
            if document != self._vm_data:
                self._vm_data = None
                vm.set_data_json(document.decode())
                self._vm_data = document
            vm.set_input_json(orjson.dumps(input_value).decode())
            raw = {rule: vm.execute_entry_point(rule) for rule in rules}
        except (TypeError, orjson.JSONEncodeError):
            return None  # not JSON (e.g. an integer beyond 64 bits): the interpreter decides
        except (RuntimeError, ValueError) as exc:
            # The VM could not take this input or finish (e.g. nesting beyond its parser's limit,
            # its instruction budget): the interpreter answers this evaluation. The policy stays
            # on the VM (one guest's input must not slow every later handshake down).
            if not self._vm_failure_logged:
                self._vm_failure_logged = True
                _log.warning(
                    "%s policy %r: regorus's VM could not answer (%s); its interpreter answered "
                    "(logged once per policy version)",
                    self.kind.value,
                    self.policy_id,
                    _engine_message(exc)[:300],
                )
            self._vm_data = None  # whatever the VM holds now, set it again next time
            return None
        # Undefined anywhere in an answer (the VM also leaves it inside collections, where the
        # interpreter drops the element): the interpreter answers.
        if any(_VM_UNDEFINED_JSON in text for text in raw.values()):
            return None
        return {rule: orjson.loads(text) for rule, text in raw.items()}

    def _compile(self, text: str) -> str | None:
        """Load the policy and check it; returns what is wrong (no exception keeps a frame alive)."""
        # The engine is never held in a local: a frame kept alive by a traceback must not hold
        # it (it would be dropped wherever that frame is collected); the box handles that.
        kind, policy_id, box = self.kind.value, self.policy_id, self._box
        with contextlib.suppress(AttributeError, TypeError, RuntimeError):  # older bindings: defaults
            box.engine.set_policy_length_config(
                max_col=MAX_POLICY_BYTES, max_file_bytes=MAX_POLICY_BYTES, max_lines=MAX_POLICY_BYTES
            )
        try:
            box.engine.add_policy(f"{kind}/{policy_id}.rego", text)
        except (RuntimeError, ValueError) as exc:
            return f"{kind} policy {policy_id!r} does not compile: {_engine_message(exc)}"
        packages = box.engine.get_packages()
        if "data.policy" not in packages:
            return f"{kind} policy {policy_id!r} must be in package 'policy' (found {sorted(packages)})"
        box.engine.add_extension("query_reference_value", 1, self._lookup)
        main_rule = _TRUST_CLAIMS_RULE if self.kind is PolicyKind.ATTESTATION else _ALLOW_RULE
        defined: dict[str, bool] = {}
        for rule in (main_rule, _EXTENSIONS_RULE, _REASONS_RULE):
            state = self._trial(rule)
            if isinstance(state, str):
                return state
            defined[rule] = state
        if not defined[main_rule]:
            return f"{kind} policy {policy_id!r} does not define {main_rule.removeprefix('data.')}"
        self.has_extensions = self.kind is PolicyKind.ATTESTATION and defined[_EXTENSIONS_RULE]
        self.has_reasons = defined[_REASONS_RULE]
        return None

    def _trial(self, rule: str) -> bool | str:
        """Whether ``rule`` exists; a trial run on empty input also catches unknown functions."""
        box = self._box
        with self.lock:
            self._lookup.values, self._lookup.asked, self._data = {}, set(), None
            box.engine.set_input({})
            box.engine.clear_data()
            box.engine.add_data({"plugin": "", "resource-path": [], "query": {}, "reference": {}})
            try:
                box.engine.eval_rule(rule)
            except (RuntimeError, ValueError) as exc:
                message = _engine_message(exc)
                if _NOT_A_RULE in message:
                    return False
                if "could not find function" in message:
                    return f"{self.kind.value} policy {self.policy_id!r}: {message}"
            return True

    def evaluate(
        self, input_value: Any, data: dict[str, Any], values: Mapping[str, Any], rules: Sequence[str]
    ) -> tuple[dict[str, Any], set[str]]:
        """Evaluate ``rules``; returns results (None for undefined) and names asked but not given."""
        _GRAVEYARDS.graveyard.sweep()
        box = self._box
        failure: str | None = None
        results: dict[str, Any] = {}
        with self.lock:
            fast = self._evaluate_vm(input_value, data, values, rules)
            if fast is not None:
                return fast, set()
            self._lookup.values, self._lookup.asked = values, set()
            try:
                try:
                    box.engine.set_input(input_value)
                    if self.uses_data_reference:
                        data = {**data, "reference": dict(values)}
                    if data != self._data:
                        # Changing data makes regorus re-prepare the policy (tens of µs): only
                        # when it differs from the last evaluation's (same resource path, no RVs).
                        self._data = None
                        box.engine.clear_data()
                        if data:
                            box.engine.add_data(data)
                        self._data = data
                except Exception as exc:  # a value regorus cannot represent
                    failure = f"input or data not representable in Rego: {_engine_message(exc)}"
                for rule in rules if failure is None else ():
                    try:
                        results[rule] = box.engine.eval_rule(rule)
                    except (RuntimeError, ValueError) as exc:
                        message = _engine_message(exc)
                        if _NOT_A_RULE in message:
                            results[rule] = None
                            continue
                        failure = message
                        break
                asked = set(self._lookup.asked)
            finally:
                self._lookup.values, self._lookup.asked = {}, set()
        if failure is not None:
            raise PolicyEvaluationError(f"{self.kind.value} policy {self.policy_id!r}: {failure}")
        return results, asked


def check_policy(kind: PolicyKind, policy_id: str, text: str) -> None:
    """Refuse (PolicySyntaxError / ValueTooLarge) a policy that would not work if stored."""
    check_policy_text(text)
    _Compiled(kind, policy_id, None, text, PolicyVm.OFF)


# --- claims -----------------------------------------------------------------------------------


def _transform_claims(
    tee: str, claims: Mapping[str, Any], init_data_claims: Any, runtime_data_claims: Any
) -> dict[str, Any]:
    """Trustee's ``transform_claims``: report/init data move beside the TEE's own claims."""
    tee_claims = dict(claims)
    evidence: dict[str, Any] = {}
    init_data = tee_claims.pop("init_data", None)
    report_data = tee_claims.pop("report_data", None)
    if init_data is not None or init_data_claims is not None:
        if init_data is not None:
            evidence["init_data"] = init_data
        evidence["init_data_claims"] = init_data_claims
    if report_data is not None or runtime_data_claims is not None:
        if report_data is not None:
            evidence["report_data"] = report_data
        evidence["runtime_data_claims"] = runtime_data_claims
    evidence[tee] = tee_claims
    return evidence


def _reasons(value: Any) -> list[str]:
    if isinstance(value, set | frozenset | list | tuple):
        items = [str(v)[:_MAX_REASON_CHARS] for v in value]
        return sorted(items)[:MAX_EXPLANATION_ITEMS]
    if isinstance(value, str):
        return [value[:_MAX_REASON_CHARS]]
    return []


def _parse_trust_claims(policy_id: str, value: Any) -> dict[str, int]:
    if value is None:
        raise PolicyEvaluationError(
            f"attestation policy {policy_id!r} gave no trust_claims; at least one policy claim must be set"
        )
    if not isinstance(value, Mapping):
        raise PolicyEvaluationError(f"attestation policy {policy_id!r}: trust_claims is not an object")
    vector: dict[str, int] = {}
    for name, claim in value.items():
        py = _EAR_TO_PY.get(name) if isinstance(name, str) else None
        if py is None:
            raise PolicyEvaluationError(
                f"attestation policy {policy_id!r}: trust claim {name!r} is not one of "
                f"{[ear for ear, _ in AR4SI_CLAIMS]}"
            )
        if isinstance(claim, bool) or not isinstance(claim, int) or not -128 <= claim <= 127:
            raise PolicyEvaluationError(
                f"attestation policy {policy_id!r}: trust claim {name!r} = {claim!r} is not an integer "
                "in -128..127"
            )
        vector[py] = claim
    if not vector:
        raise PolicyEvaluationError(
            f"attestation policy {policy_id!r}: at least one policy claim must be set"
        )
    return vector


def _parse_extensions(policy_id: str, value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PolicyEvaluationError(f"attestation policy {policy_id!r}: extensions is not an array")
    result: list[dict[str, Any]] = []
    for item in value:
        if (
            not isinstance(item, Mapping)
            or not isinstance(item.get("name"), str)
            or isinstance(item.get("key"), bool)
            or not isinstance(item.get("key"), int)
            or "value" not in item
        ):
            raise PolicyEvaluationError(
                f"attestation policy {policy_id!r}: each extension needs a string 'name', "
                "an integer 'key' and a 'value'"
            )
        result.append({"name": item["name"], "key": item["key"], "value": _jsonable(item["value"])})
    return result


def _jsonable(value: Any) -> Any:
    """regorus returns sets for Rego sets; JSON has arrays."""
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _submod_notes(token_claims: Mapping[str, Any]) -> list[str]:
    """Which submodules were not affirming, and which trust-vector entries made them so."""
    notes: list[str] = []
    submods = token_claims.get("submods")
    if not isinstance(submods, Mapping):
        return ["token has no 'submods' object"]
    for name, submod in sorted(submods.items()):
        if not isinstance(submod, Mapping):
            continue
        status = submod.get("ear.status")
        if status == "affirming":
            continue
        vector = submod.get("ear.trustworthiness-vector")
        bad: list[str] = []
        if isinstance(vector, Mapping):
            for ear_name, value in vector.items():
                if (
                    isinstance(value, int)
                    and not isinstance(value, bool)
                    and trust_tier(value)
                    in (
                        "warning",
                        "contraindicated",
                    )
                ):
                    bad.append(_describe(_EAR_TO_PY.get(str(ear_name), str(ear_name)), value))
        detail = f": {', '.join(bad)}" if bad else ""
        notes.append(f"{name} is {status}{detail}")
    return notes[:MAX_EXPLANATION_ITEMS]


# --- the engine -------------------------------------------------------------------------------


class PolicyEngine:
    """Compiled-policy cache plus evaluation of attestation and resource policies.

    Call it from one thread (the server's event loop): regorus engines are thread-affine.

    ``dev`` selects the development resource policy (built-in ``dev``: sample or simulated
    evidence bound to its TEE key is released) when no resource policy is stored. INSECURE.
    ``vm`` says which policies run on regorus's compiled VM (:class:`PolicyVm`).
    """

    def __init__(
        self,
        policy_store: PolicyStore,
        rv_store: ReferenceValueStore,
        *,
        dev: bool = False,
        rvps: Rvps | None = None,
        cache_size: int = MAX_COMPILED_POLICIES,
        vm: PolicyVm = PolicyVm.BUILTIN,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not refresh_seconds >= 0:
            raise ValueError(f"refresh_seconds must be >= 0, not {refresh_seconds!r}")
        self.policies = policy_store
        self.vm = vm
        self.rvps = rvps if rvps is not None else Rvps(rv_store, cache_seconds=refresh_seconds)
        self.dev = dev
        self._refresh_seconds = refresh_seconds
        self._monotonic = monotonic
        # (kind, id) → (when read, stored version or None): the store's answer, reused for
        # refresh_seconds; cleared when a policy is set through this engine.
        self._versions: dict[tuple[PolicyKind, str], tuple[float, int | None]] = {}
        self._cache: OrderedDict[tuple[PolicyKind, str, int | None], _Compiled | PolicySyntaxError] = (
            OrderedDict()
        )
        self._cache_size = max(1, cache_size)
        self._cache_lock = threading.Lock()
        self.compilations = 0
        if dev:
            _log.warning(
                "INSECURE development resource policy in use when none is stored: sample and simulated "
                "evidence bound to its TEE key will be released resources"
            )

    # -- cache --

    def _cached(self, key: tuple[PolicyKind, str, int | None], text: str) -> _Compiled:
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
        if hit is None:
            try:
                hit = _Compiled(key[0], key[1], key[2], text, self.vm)
                _log.info(
                    "%s policy %r (version %s) compiled; evaluated by regorus's %s",
                    key[0].value,
                    key[1],
                    "built-in" if key[2] is None else key[2],
                    "VM" if hit.on_vm else f"interpreter ({hit.vm_refusal})",
                )
            except PolicySyntaxError as exc:
                # Cache a fresh error: the raised one's traceback would keep frames alive.
                hit = PolicySyntaxError(str(exc))
                hit.policy_version = key[2]
            self.compilations += 1
            with self._cache_lock:
                self._cache[key] = hit
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        if isinstance(hit, PolicySyntaxError):
            fresh = PolicySyntaxError(str(hit))  # a new object: re-raising one would grow its traceback
            fresh.policy_version = hit.policy_version
            raise fresh
        return hit

    async def _version(self, kind: PolicyKind, policy_id: str) -> int | None:
        """The stored version of a policy (None: none stored), at most ``refresh_seconds`` old."""
        if self._refresh_seconds <= 0:
            return await self.policies.version(kind, policy_id)
        key = (kind, policy_id)
        now = self._monotonic()
        hit = self._versions.get(key)
        if hit is not None and now - hit[0] < self._refresh_seconds:
            return hit[1]
        version = await self.policies.version(kind, policy_id)
        if len(self._versions) >= _MAX_VERSION_ENTRIES:
            self._versions.clear()
        self._versions[key] = (now, version)
        return version

    def forget_versions(self) -> None:
        """Ask the store again on the next request (a policy changed)."""
        self._versions.clear()

    async def _load(self, kind: PolicyKind, policy_id: str, builtin: str | None) -> _Compiled | None:
        """The compiled stored policy, else the named built-in, else None."""
        version = await self._version(kind, policy_id)
        if version is not None:
            key = (kind, policy_id, version)
            with self._cache_lock:
                compiled = self._cache.get(key)
            if compiled is not None and not isinstance(compiled, PolicySyntaxError):
                with self._cache_lock:
                    self._cache.move_to_end(key)
                return compiled
            try:
                stored = await self.policies.get(kind, policy_id)
            except PolicyNotFound:
                stored = None  # deleted between the two calls: fall through to the built-in
            if stored is not None:
                return self._cached((kind, policy_id, stored.version), stored.text)
        if builtin is not None:
            return self._cached((kind, builtin, None), builtin_policy_text(kind, builtin))
        return None

    async def _attestation_policy(self, requested: str, tee_class: str) -> _Compiled:
        candidates = [f"{requested}_{tee_class}", requested]
        for candidate in candidates:
            try:
                validate_policy_id(candidate)
            except EvidenceError:
                continue
            builtin = candidate if candidate in ATTESTATION_BUILTINS else None
            compiled = await self._load(PolicyKind.ATTESTATION, candidate, builtin)
            if compiled is not None:
                return compiled
        raise PolicyEvaluationError(
            f"no attestation policy {candidates[0]!r} or {candidates[1]!r} (stored or built-in "
            f"{sorted(ATTESTATION_BUILTINS)})"
        )

    async def _resource_policy(self) -> _Compiled:
        builtin = "dev" if self.dev else "default"
        compiled = await self._load(PolicyKind.RESOURCE, RESOURCE_POLICY_ID, builtin)
        assert compiled is not None  # a built-in always exists
        return compiled

    # -- evaluation --

    async def _evaluate(
        self,
        compiled: _Compiled,
        input_value: Any,
        data: dict[str, Any],
        rules: Sequence[str],
        known: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Evaluate with reference values fetched first; returns (results, values used)."""
        values: dict[str, Any]
        if known is not None:
            values = known
        elif compiled.wants_all_references:
            try:
                values = await self.rvps.query_all(limit=MAX_REFERENCE_QUERIES)
            except RvpsError as exc:
                raise PolicyEvaluationError(f"policy {compiled.policy_id!r}: {exc}") from None
        else:
            values = await self.rvps.query_many(sorted(compiled.rv_names)[:MAX_REFERENCE_QUERIES])
        for _ in range(_MAX_RV_ROUNDS):
            results, asked = compiled.evaluate(input_value, data, values, rules)
            missing = sorted(asked - values.keys())
            if not missing:
                return results, values
            if len(values) + len(missing) > MAX_REFERENCE_QUERIES:
                raise PolicyEvaluationError(
                    f"policy {compiled.policy_id!r} asked for more than {MAX_REFERENCE_QUERIES} "
                    "reference values"
                )
            values.update(await self.rvps.query_many(missing))
        raise PolicyEvaluationError(
            f"policy {compiled.policy_id!r} kept asking for new reference values after "
            f"{_MAX_RV_ROUNDS} rounds"
        )

    async def appraise(
        self,
        tee: str,
        claims: dict[str, Any],
        *,
        policy_ids: list[str] | None = None,
        init_data_claims: Any = None,
        runtime_data_claims: Any = None,
        explain: bool = True,
    ) -> Appraisal:
        """Run the attestation policy over one TEE's claims; raises PolicyEvaluationError.

        Only the first of ``policy_ids`` is used (as Trustee); default ``["default"]``. With
        ``explain=False`` the policy's ``reasons`` (explanation only, never part of the verdict
        or the token) are not evaluated, and ``explanation["reasons"]``, ``["trust_vector"]``
        (the descriptions) and ``["reference_values"]`` are None.
        """
        tee_class = TEE_CLASSES.get(tee)
        if tee_class is None:
            raise EvidenceError(f"unknown TEE {tee!r}; known: {sorted(TEE_CLASSES)}")
        requested = (policy_ids or [DEFAULT_ATTESTATION_POLICY])[0]
        compiled = await self._attestation_policy(requested, tee_class)
        evidence = _transform_claims(tee, claims, init_data_claims, runtime_data_claims)
        reads = compiled.input_reads
        policy_input = evidence if reads is None else project_input(evidence, reads)
        rules = [_TRUST_CLAIMS_RULE]
        if compiled.has_extensions:
            rules.append(_EXTENSIONS_RULE)
        results, values = await self._evaluate(compiled, policy_input, {}, rules)
        set_claims = _parse_trust_claims(compiled.policy_id, results.get(_TRUST_CLAIMS_RULE))
        extensions = _parse_extensions(compiled.policy_id, results.get(_EXTENSIONS_RULE))
        vector = {py: set_claims.get(py, 0) for _, py in AR4SI_CLAIMS}
        status = status_from_trust_vector(set_claims)
        if explain and compiled.has_reasons and status != "affirming":
            # Explanations cost an evaluation; only a refusal needs one.
            more, values = await self._evaluate(compiled, policy_input, {}, [_REASONS_RULE], values)
            results.update(more)
        explanation: dict[str, Any] = {
            "policy": compiled.policy_id,
            "policy_version": compiled.version,
            "policy_digest": compiled.digest,
            "status": status,
            "trust_vector": (
                [_describe(py, vector[py]) for _, py in AR4SI_CLAIMS if py in set_claims] if explain else None
            ),
            "reasons": _reasons(results.get(_REASONS_RULE)) if explain else None,
            "reference_values": (
                {name: values[name] is not None for name in sorted(values)} if explain else None
            ),
        }
        return Appraisal(
            policy_id=requested,
            status=status,
            trust_vector=vector,
            explanation=explanation,
            evaluated_policy_id=compiled.policy_id,
            policy_version=compiled.version,
            tee=tee,
            tee_class=tee_class,
            annotated_evidence=evidence,
            extensions=extensions,
            claims_set=tuple(py for _, py in AR4SI_CLAIMS if py in set_claims),
        )

    async def resource_allowed(self, token_claims: dict[str, Any], path: ResourcePath) -> Decision:
        """Whether the resource policy releases ``path`` to the holder of ``token_claims``.

        Never raises for a policy problem: any error is a denial naming it.
        """
        policy_id = RESOURCE_POLICY_ID
        version: int | None = None
        try:
            compiled = await self._resource_policy()
            policy_id = (
                compiled.policy_id if compiled.version is not None else f"builtin:{compiled.policy_id}"
            )
            version = compiled.version
            data = {"plugin": "resource", "resource-path": [path.repo, path.type, path.tag], "query": {}}
            reads = compiled.input_reads
            policy_input = token_claims if reads is None else project_input(token_claims, reads)
            results, values = await self._evaluate(compiled, policy_input, data, [_ALLOW_RULE])
            if results.get(_ALLOW_RULE) is not True and compiled.has_reasons:
                more, values = await self._evaluate(compiled, policy_input, data, [_REASONS_RULE], values)
                results.update(more)
        except PolicySyntaxError as exc:
            version = exc.policy_version if exc.policy_version is not None else version
            return Decision(False, policy_id, f"resource policy error, denied: {exc}", version)
        except PolicyEvaluationError as exc:
            return Decision(False, policy_id, f"resource policy error, denied: {exc}", version)
        except (asyncio.CancelledError, CollateralUnavailable):
            raise  # a store that is down is a 503 (retry), not a verdict
        except Exception as exc:  # deny on anything at all: a policy must never fail open
            _log.exception("resource policy evaluation failed")
            return Decision(False, policy_id, f"resource policy evaluation failed, denied: {exc}", version)
        allow = results.get(_ALLOW_RULE)
        reasons = tuple(_reasons(results.get(_REASONS_RULE)))
        if allow is True:
            return Decision(True, policy_id, f"allowed by {policy_id}", version, reasons)
        if allow is None:
            why = "the policy does not define data.policy.allow"
        elif allow is False:
            why = "data.policy.allow is false"
        else:
            why = f"data.policy.allow is {json.dumps(_jsonable(allow))[:100]}, not true"
        notes = list(reasons) or _submod_notes(token_claims)
        detail = f"; {'; '.join(notes)}" if notes else ""
        return Decision(False, policy_id, f"denied by {policy_id}: {why}{detail}", version, tuple(notes))

    # -- administration --

    async def set_attestation_policy(self, policy_id: str, text: str) -> int:
        """Validate (compile) and store; returns the new version. The old policy stays on error."""
        validate_policy_id(policy_id)
        check_policy(PolicyKind.ATTESTATION, policy_id, text)
        try:
            stored = await self.policies.set(PolicyKind.ATTESTATION, policy_id, text)
        finally:
            self.forget_versions()
        return stored.version

    async def set_resource_policy(self, text: str) -> int:
        """Validate (compile) and store the resource policy; returns the new version."""
        check_policy(PolicyKind.RESOURCE, RESOURCE_POLICY_ID, text)
        try:
            stored = await self.policies.set(PolicyKind.RESOURCE, RESOURCE_POLICY_ID, text)
        finally:
            self.forget_versions()
        return stored.version

    async def list_attestation_policies(self) -> list[str]:
        """Stored attestation policy ids together with the built-in ones."""
        stored = await self.policies.list_ids(PolicyKind.ATTESTATION)
        return sorted(set(stored) | set(ATTESTATION_BUILTINS))

    async def attestation_policy_text(self, policy_id: str) -> str:
        """The stored text, else the built-in text; PolicyNotFound otherwise."""
        validate_policy_id(policy_id)
        try:
            return (await self.policies.get(PolicyKind.ATTESTATION, policy_id)).text
        except PolicyNotFound:
            if policy_id in ATTESTATION_BUILTINS:
                return builtin_policy_text(PolicyKind.ATTESTATION, policy_id)
            raise
