# Development profile resource policy (built-in "dev"; `teegate kbs serve --dev` only). INSECURE.
#
# Releases to any affirming submodule, and also to Trustee sample evidence or teegate simulated
# evidence (a TEE claims object with "simulated": true) whose token carries the TEE public key
# bound through report data (runtime_data_claims["tee-pubkey"]). Never use outside development.
package policy

import rego.v1

default allow := false

allow if {
	data.plugin == "resource"
	count(input.submods) > 0
	every submod in input.submods {
		acceptable(submod)
	}
}

acceptable(submod) if submod["ear.status"] == "affirming"

acceptable(submod) if {
	development_evidence(submod["ear.veraison.annotated-evidence"])
	submod["ear.veraison.annotated-evidence"].runtime_data_claims["tee-pubkey"]
}

development_evidence(evidence) if evidence.sample

development_evidence(evidence) if {
	some tee in ["tdx", "sgx"]
	evidence[tee].simulated == true
}

reasons contains sprintf("submodule %s is neither affirming nor bound sample/simulated evidence", [name]) if {
	some name, submod in input.submods
	not acceptable(submod)
}
