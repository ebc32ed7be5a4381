#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` (continuous batching, --parallel N) from the llama.cpp
# that llama-cpp-python 0.3.36 vendors, so the server benchmark runs the same kernels as the
# in-process backend. Needs cmake, a C++17 compiler and PyPI; no other download (the web UI is
# left out: -DLLAMA_BUILD_UI=OFF). It took 23 minutes on a 2-core machine beside another job.
#
#   bash benchmarks/build_llama_server.sh [OUT_DIR]    # default runs/llama-server
#   python benchmarks/backends.py --server-only --llama-server runs/llama-server/bin/llama-server
set -euo pipefail
out="$(realpath -m "${1:-runs/llama-server}")"
version=0.3.36
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work" -q
tar -xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work"
source="$work/llama_cpp_python-$version/vendor/llama.cpp"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$source" -B "$work/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
cmake --build "$work/build" --target llama-server -j "$(nproc)"
mkdir -p "$out/bin"
cp "$work/build/bin/llama-server" "$out/bin/"
"$out/bin/llama-server" --version
echo "built $out/bin/llama-server"
