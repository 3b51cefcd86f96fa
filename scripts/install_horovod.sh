#!/usr/bin/env bash
# Build and install Horovod 0.28.1 (Gloo, PyTorch; no MPI/TensorFlow/MXNet) into .venv for the
# torch already installed there.  Horovod 0.28.1's CMake asks for C++14, but torch 2.x headers
# need C++17: a CMake project-include file maps the C++14 flag to -std=c++17, passed through a
# wrapper given as HOROVOD_CMAKE.  Skips the build when Horovod with Gloo already imports.
# Takes about 6 minutes on 2 cores.  Usage: bash scripts/install_horovod.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if "$PY" - <<'PYEOF' 2>/dev/null
import horovod.torch as hvd
raise SystemExit(0 if hvd.gloo_built() else 1)
PYEOF
then
  echo "horovod (gloo) already installed"; exit 0
fi
"$PY" -c "import torch" || { echo "install torch first (pip install -e '.[dev]')" >&2; exit 1; }
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
"$PY" -m pip install -q --no-build-isolation --no-cache-dir "horovod==0.28.1"
"$PY" -c "import horovod.torch as hvd; assert hvd.gloo_built(), 'horovod built without gloo'; print('horovod', __import__('horovod').__version__, 'gloo ok')"
