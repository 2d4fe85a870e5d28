# Trustee's default resource policy, rewritten (built-in "trustee-default").
#
# Releases any resource of the resource plugin to any TEE except Trustee's sample TEE,
# whatever the EAR status says. Kept for compatibility; teegate's "default" is safer.
package policy

import rego.v1

default allow := false

allow if {
	data.plugin == "resource"
	not input.submods.cpu0["ear.veraison.annotated-evidence"].sample
}

reasons contains "sample evidence is refused by this policy" if {
	input.submods.cpu0["ear.veraison.annotated-evidence"].sample
}
