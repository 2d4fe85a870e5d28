# Built-in "affirming": release only when there is at least one submodule and every one is
# affirming (same meaning as Trustee's sample affirming.rego and as teegate's default).
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

reasons contains sprintf("submodule %s has ear.status %q, not \"affirming\"", [name, status]) if {
	some name, submod in input.submods
	status := object.get(submod, "ear.status", "missing")
	status != "affirming"
}
