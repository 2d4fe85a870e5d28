# Built-in "allow-all": any attested client may fetch any resource of the resource plugin.
package policy

import rego.v1

default allow := false

allow if data.plugin == "resource"
