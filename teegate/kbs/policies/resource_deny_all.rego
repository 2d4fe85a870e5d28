# Built-in "deny-all": nothing is released.
package policy

import rego.v1

default allow := false

reasons contains "the resource policy releases nothing (deny-all)"
