#!/usr/bin/env bash
# Generates the Python protobuf and gRPC code from proto/ into gen/python (the one place it lives).
# Usage: scripts/gen_proto.sh [OUT_DIR]   (default gen/python; `make proto-check` passes a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-gen/python}")"
rm -rf "$out/llmops"
mkdir -p "$out"
mapfile -t protos < <(cd proto && find llmops -name '*.proto' | sort)
(cd proto && "${PYTHON:-python}" -m grpc_tools.protoc -I . \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" "${protos[@]}")
# protoc writes no __init__.py; make every generated folder a regular package.
find "$out/llmops" -type d -exec touch {}/__init__.py \;
