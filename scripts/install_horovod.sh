#!/usr/bin/env bash
# Build and install Horovod 0.28.1 (Gloo, PyTorch; no MPI/TensorFlow/MXNet) into .venv for the
# torch already installed there.  Horovod 0.28.1's CMake asks for C++14, but torch 2.x headers
# need C++17: a CMake project-include file maps the C++14 flag to -std=c++17, passed through a
# wrapper given as HOROVOD_CMAKE.
#
# The built wheel is cached, keyed by the Horovod, torch and Python versions, in
# ${SPARKML_SCALE_CACHE:-~/.cache/sparkml_scale}/wheels/, so the build (3 minutes on a quiet 2-core
# machine, up to 18 on a loaded one) happens once per machine, not once per .venv or clone.
# Skips everything when Horovod with Gloo already imports.  Usage: bash scripts/install_horovod.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
HOROVOD_VERSION=0.28.1
if "$PY" - <<'PYEOF' 2>/dev/null
import horovod.torch as hvd
raise SystemExit(0 if hvd.gloo_built() else 1)
PYEOF
then
  echo "horovod (gloo) already installed"; exit 0
fi
torch_version=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])") \
  || { echo "install torch first (pip install -e '.[dev]')" >&2; exit 1; }
py_tag=$("$PY" -c "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')")
cache="${SPARKML_SCALE_CACHE:-$HOME/.cache/sparkml_scale}/wheels/horovod-${HOROVOD_VERSION}-torch${torch_version}-${py_tag}-$(uname -m)"
check='import horovod.torch as hvd; assert hvd.gloo_built(), "horovod built without gloo"; print("horovod", __import__("horovod").__version__, "gloo ok")'
shopt -s nullglob
cached=("$cache"/horovod-*.whl)
if [ ${#cached[@]} -eq 1 ]; then
  echo "horovod: installing the cached wheel ${cached[0]}"
  if "$PY" -m pip install -q --force-reinstall --no-deps "${cached[0]}" && "$PY" -m pip install -q "${cached[0]}" && "$PY" -c "$check"; then
    exit 0
  fi
  echo "horovod: the cached wheel does not work here; rebuilding" >&2
  rm -f "${cached[@]}"
fi
echo "horovod: building ${HOROVOD_VERSION} for torch ${torch_version} (3-18 minutes, once per machine; cached in $cache)"
"$PY" -m pip install -q "cmake>=3.13,<4" packaging wheel
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/cxx17.cmake" <<'CMEOF'
set(CMAKE_CXX14_STANDARD_COMPILE_OPTION "-std=c++17")
set(CMAKE_CXX14_EXTENSION_COMPILE_OPTION "-std=gnu++17")
CMEOF
real_cmake=$("$PY" -c "import cmake, os; print(os.path.join(cmake.CMAKE_BIN_DIR, 'cmake'))")
cat > "$work/cmake" <<WEOF
#!/usr/bin/env bash
# Add the C++17 project include to configure runs only (not to --build/-E invocations).
case "\${1:-}" in
  --build|-E|--install|--version) exec "$real_cmake" "\$@" ;;
  *) exec "$real_cmake" -DCMAKE_PROJECT_INCLUDE="$work/cxx17.cmake" -DCMAKE_POLICY_VERSION_MINIMUM=3.5 "\$@" ;;
esac
WEOF
chmod +x "$work/cmake"
export HOROVOD_CMAKE="$work/cmake" MAKEFLAGS="-j$(nproc)"
export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
       HOROVOD_WITHOUT_MXNET=1 HOROVOD_CPU_OPERATIONS=gloo
"$PY" -m pip wheel -q --no-build-isolation --no-cache-dir --no-deps -w "$work/dist" "horovod==${HOROVOD_VERSION}"
built=("$work"/dist/horovod-*.whl)
"$PY" -m pip install -q "${built[0]}"
"$PY" -c "$check"
# Publish to the cache only once the wheel imports with Gloo (atomic rename: no half-written wheel).
mkdir -p "$cache"
cp "${built[0]}" "$cache/.tmp-$$.whl" && mv "$cache/.tmp-$$.whl" "$cache/$(basename "${built[0]}")"
echo "horovod: wheel cached in $cache"
