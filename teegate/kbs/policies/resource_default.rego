# teegate default resource policy (built-in "default").
#
# Release a resource only when the attestation token has at least one submodule and every
# submodule's EAR status is "affirming". Safer than Trustee's default, which releases to any
# non-sample TEE whatever its status (that one is built-in "trustee-default").
#
# input: the verified attestation token's claims (EAR: input.submods.<name>["ear.status"], …)
# data:  {"plugin": "resource", "resource-path": [repo, type, tag], "query": {}}
package policy

import rego.v1

default allow := false

allow if {
	data.plugin == "resource"
	count(input.submods) > 0
	every submod in input.submods {
		submod["ear.status"] == "affirming"
	}
}

# teegate extension: why a request was refused (ignored by Trustee).
reasons contains sprintf("plugin %q is not the resource plugin", [data.plugin]) if data.plugin != "resource"

reasons contains "the token has no EAR submodules" if count(object.get(input, "submods", {})) == 0

reasons contains sprintf("submodule %s has ear.status %q, not \"affirming\"", [name, status]) if {
	some name, submod in input.submods
	status := object.get(submod, "ear.status", "missing")
	status != "affirming"
}
