#!/bin/sh
# Regenerate messages_pb2.py (+ .pyi) from messages.proto with grpcio-tools.
set -eu
cd "$(dirname "$0")"
PY="${PYTHON:-../../../.venv/bin/python}"
"$PY" -m grpc_tools.protoc -I. --python_out=. --pyi_out=. messages.proto
# Generated stubs use bare generics mypy --strict rejects; mark the generated file itself.
grep -q '^# mypy: ignore-errors' messages_pb2.pyi || sed -i '1i # mypy: ignore-errors' messages_pb2.pyi
