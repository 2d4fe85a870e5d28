"""teegate's built-in Rego policies (package data): attestation policies and resource policies."""
