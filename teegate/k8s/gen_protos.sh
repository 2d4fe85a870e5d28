#!/bin/sh
# Regenerate the checked-in gRPC modules of teegate.k8s from their .proto files.
# Run from the repository root: sh teegate/k8s/gen_protos.sh
set -eu
PY=${PY:-.venv/bin/python}
for proto in \
    teegate/k8s/deviceplugin/v1beta1/api.proto \
    teegate/k8s/kubevirt/hooks/info/api_info.proto \
    teegate/k8s/kubevirt/hooks/v1alpha2/api_v1alpha2.proto \
    teegate/k8s/kubevirt/hooks/v1alpha3/api_v1alpha3.proto; do
    "$PY" -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. "$proto"
done
# The generated gRPC stubs are untyped; mypy's module-pattern overrides cannot match nested
# `*_pb2_grpc` names, so mark each generated file itself.
find teegate/k8s -name '*_pb2_grpc.py' -o -name '*_pb2.pyi' | while read -r f; do
    grep -q '^# mypy: ignore-errors' "$f" || sed -i '1i # mypy: ignore-errors' "$f"
done
