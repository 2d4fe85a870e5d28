# teegate default attestation policy for CPU TEEs (policy id "default_cpu").
#
# Contract (the same as Trustee's attestation service, so either side can load it):
#   input   the verifier's claims: input.tdx | input.sgx | input.sample (one of them), plus
#           report_data, runtime_data_claims, init_data, init_data_claims
#   output  trust_claims: an AR4SI trustworthiness vector (integers -128..127)
#           extensions:   EAR extensions [{name, key, value}]
#           reasons:      (teegate, optional) short texts explaining the vector
#   query_reference_value(name) returns the value registered in the RVPS, or null.
#
# Differences from Trustee's default (each also named in reasons):
#   * a debug TD or debug enclave makes configuration 96 (contraindicated), not 36;
#   * a known platform whose TCB needs attention (e.g. OutOfDate) gets hardware 32 (warning:
#     genuine, known vulnerabilities) rather than 97 (unrecognized); either way the status is
#     not affirming. strict_cpu makes out-of-date TCBs 96 (contraindicated).
package policy

import rego.v1

# AR4SI values used below (draft-ietf-rats-ar4si):
#   executables    3 approved boot-time, 4 approved boot-time (partial), 33 unrecognized runtime
#   hardware       2 genuine, 32 genuine with known vulnerabilities, 97 unrecognized
#   configuration  2 approved, 36 relevant elements unavailable, 96 unsupportable
default executables := 33

default hardware := 97

default configuration := 36

default file_system := 0

default instance_identity := 0

default runtime_opaque := 0

default storage_opaque := 0

default sourced_data := 0

trust_claims := {
	"instance-identity": instance_identity,
	"configuration": configuration,
	"executables": executables,
	"file-system": file_system,
	"hardware": hardware,
	"runtime-opaque": runtime_opaque,
	"storage-opaque": storage_opaque,
	"sourced-data": sourced_data,
}

intel_vendor_id := "939a7233f79c4ca9940a0db3957f0607"

# TCB levels that verified but need attention (DCAP's non-terminal statuses).
tcb_needs_attention := {
	"SWHardeningNeeded",
	"ConfigurationNeeded",
	"ConfigurationAndSWHardeningNeeded",
	"OutOfDate",
	"OutOfDateConfigurationNeeded",
	"TDRelaunchAdvised",
	"TDRelaunchAdvisedConfigurationNeeded",
}

##### Sample evidence (testing only; the KBS refuses it unless configured)

executables := 3 if {
	input.sample.launch_digest in query_reference_value("launch_digest")
}

hardware := 2 if {
	input.sample.svn in query_reference_value("svn")
	input.sample.platform_version.major == query_reference_value("major_version")
	minimum := query_reference_value("minimum_minor_version")
	is_number(minimum)
	input.sample.platform_version.minor >= minimum
}

configuration := 2 if {
	input.sample.debug == false
}

##### Intel TDX

tdx_platform_known if {
	input.tdx.quote.header.tee_type == "81000000"
	input.tdx.quote.header.vendor_id == intel_vendor_id
	input.tdx.quote.body.mr_td in query_reference_value("mr_td")
	input.tdx.collateral_expiration_status == "0"
}

hardware := 2 if {
	tdx_platform_known
	input.tdx.tcb_status == "UpToDate"
} else := 32 if {
	tdx_platform_known
	input.tdx.tcb_status in tcb_needs_attention
}

executables := 3 if {
	input.tdx.quote.body.rtmr_1 in query_reference_value("rtmr_1")
	input.tdx.quote.body.rtmr_2 in query_reference_value("rtmr_2")
	tdx_kernel_measured
	tdx_kernel_cmdline_measured
} else := 4 if {
	# RTMR 1 and 2 match but the event log does not name the kernel (e.g. grub boot).
	input.tdx.quote.body.rtmr_1 in query_reference_value("rtmr_1")
	input.tdx.quote.body.rtmr_2 in query_reference_value("rtmr_2")
}

configuration := 96 if {
	input.tdx.td_attributes.debug == true
} else := 2 if {
	input.tdx.td_attributes.debug == false
	input.tdx.quote.body.xfam in query_reference_value("xfam")
}

tdx_kernel_measured if {
	some event in input.tdx.uefi_event_logs
	event.type_name == "EV_EFI_BOOT_SERVICES_APPLICATION"
	"File(kernel)" in event.details.device_paths
	some digest in event.digests
	digest.digest == query_reference_value("tdvfkernel")
}

tdx_kernel_cmdline_measured if {
	some event in input.tdx.uefi_event_logs
	event.type_name == "EV_EVENT_TAG"
	event.details.string == "LOADED_IMAGE::LoadOptions"
	some digest in event.digests
	digest.digest == query_reference_value("tdvfkernelparams")
}

##### Intel SGX

# ATTRIBUTES.FLAGS is little-endian hex; DEBUG is bit 1 of the first byte (its low nibble).
sgx_debug if {
	flags := input.sgx.body["attributes.flags"]
	is_string(flags)
	substring(flags, 1, 1) in {"2", "3", "6", "7", "a", "b", "e", "f", "A", "B", "E", "F"}
}

sgx_platform_known if {
	input.sgx.header.vendor_id == intel_vendor_id
	input.sgx.collateral_expiration_status == "0"
}

hardware := 2 if {
	sgx_platform_known
	input.sgx.tcb_status == "UpToDate"
} else := 32 if {
	sgx_platform_known
	input.sgx.tcb_status in tcb_needs_attention
}

executables := 3 if {
	input.sgx.body.mr_enclave in query_reference_value("mr_enclave")
} else := 3 if {
	input.sgx.body.mr_signer in query_reference_value("mr_signer")
	input.sgx.body.isv_prod_id in query_reference_value("isv_prod_id")
}

configuration := 96 if {
	sgx_debug
} else := 2 if {
	# Known to be a release enclave: flags present (a hex string) and DEBUG clear.
	is_string(input.sgx.body["attributes.flags"])
}

##### Explanations (teegate extension; ignored by Trustee)

reasons contains "TD is in debug mode (td_attributes.debug)" if input.tdx.td_attributes.debug == true

reasons contains "enclave is in debug mode (ATTRIBUTES.DEBUG)" if sgx_debug

reasons contains sprintf("TCB status is %s", [status]) if {
	some tee in ["tdx", "sgx"]
	status := input[tee].tcb_status
	status != "UpToDate"
}

reasons contains "collateral has expired (collateral_expiration_status != 0)" if {
	some tee in ["tdx", "sgx"]
	input[tee].collateral_expiration_status != "0"
}

# Reference values are asked for by literal name (as everywhere in this policy): the KBS
# fetches them before evaluating, and the policy can run on regorus's compiled VM.
reasons contains sprintf("%s %s is not among reference values %q", [tee, field, field]) if {
	some [tee, path, field, references] in [
		["tdx", ["quote", "body", "mr_td"], "mr_td", query_reference_value("mr_td")],
		["tdx", ["quote", "body", "rtmr_1"], "rtmr_1", query_reference_value("rtmr_1")],
		["tdx", ["quote", "body", "rtmr_2"], "rtmr_2", query_reference_value("rtmr_2")],
		["tdx", ["quote", "body", "xfam"], "xfam", query_reference_value("xfam")],
		["sgx", ["body", "mr_enclave"], "mr_enclave", query_reference_value("mr_enclave")],
		["sample", ["launch_digest"], "launch_digest", query_reference_value("launch_digest")],
	]
	value := object.get(input, array.concat([tee], path), null)
	value != null
	not value in references
}

##### EAR extensions (same shape as Trustee's default)

# Workload identifiers bound through the InitData's Kata agent policy, when present.
extensions := [{
	"name": "ear.trustee.identifiers",
	"key": -18,
	"value": {"validated": object.union(container_images_claim, container_uids_claim)},
}]

policy_containers := object.get(input, ["init_data_claims", "agent_policy_claims", "containers"], [])

container_images := [image |
	some container in policy_containers
	image := container.OCI.Annotations["io.kubernetes.cri.image-name"]
]

container_uids := [uid |
	some container in policy_containers
	uid := container.OCI.Process.User.UID
]

container_images_claim := {"container_images": container_images} if count(container_images) > 0

else := {}

container_uids_claim := {"container_uids": container_uids} if count(container_uids) > 0

else := {}
