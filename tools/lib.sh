# Shared by tools/run, tools/test and tools/bench: install what is missing from Debian, then configure and build.
# Sourced, not run. Every README command starts from a bare Debian 12 machine, so nothing here assumes a package.

CONVGEMM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The Debian packages the build needs (the optional oneDNN and plotting packages are asked for by tools/bench):
# zlib for gzipped IDX data and checksums.
CONVGEMM_BUILD_PACKAGES=(cmake g++ make pkg-config libopenblas-dev libtbb-dev catch2 libbenchmark-dev libcli11-dev
                         zlib1g-dev)
# What the test suite needs on top: the PyTorch module's tests run Debian's torch (with /usr/bin/python3) and read
# Fashion-MNIST from /usr/share/datasets/fashion-mnist/; numpy also reads the .npz weight export back.
CONVGEMM_TEST_PACKAGES=(python3-torch python3-numpy dataset-fashion-mnist)

# ensure_packages PKG...: apt-get install the packages that are not installed yet (apt-get update once, first).
ensure_packages() {
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  ((${#missing[@]} == 0)) && return 0
  local sudo=()
  [[ $(id -u) -ne 0 ]] && sudo=(sudo)
  echo "convgemm: installing ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# build_convgemm BUILD_DIR [CMAKE_ARGS...]: configure (Release unless overridden) and build with every core.
build_convgemm() {
  local build_dir="$1"
  shift
  cmake -S "$CONVGEMM_ROOT" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
  cmake --build "$build_dir" -j"$(nproc)"
}
