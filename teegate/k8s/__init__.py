"""Kubernetes integration: device plugin, admission webhook, KubeVirt TDX hook, KbsConfig operator."""
