#!/usr/bin/env bash
# Issue 17's GPU check in one device call: the `cuda` tests, then bench/gpu.py's table.
#
#   bash bench/gpu_run.sh --wheels    # here, once: the packages the GPU image lacks, into .whl/
#   bash bench/gpu_run.sh --rehearse  # here, on CPU, before spending device time (below)
#   bash bench/gpu_run.sh             # there (device run, carry [".whl"], timeout_s 590)
#
# The GPU image has torch, transformers, peft and accelerate but not the packages below, and it
# cannot reach an index: they travel as wheels (~50 MB, bitsandbytes 43 MB of it), installed
# into /tmp/site. Results land in $OUT (cuda-tests.log, gpu.txt, gpu.json).
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=(pygls lsprotocol cattrs pydantic pydantic-core annotated-types typing-inspection gguf
  platformdirs pytest-asyncio pytest-lsp bitsandbytes)

if [ "${1:-}" = "--wheels" ]; then
  for name in "${WHEELS[@]}"; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$name" || exit 1
  done
  du -sh .whl
  exit 0
fi

if [ "${1:-}" = "--rehearse" ]; then
  # The image's transformers and huggingface_hub over this environment, and an import of what
  # the image lacks (and .whl does not carry) refused: the static path's tests, the cuda tests'
  # collection and the bench's smoke run (tests/test_gpu_bench.py) as they would go there.
  python3 -m pip download -q --no-deps --only-binary=:all: -d .whl-rehearse \
    transformers==5.17.0 huggingface_hub==1.33.0 || exit 1
  rm -rf /tmp/rehearse-site
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/rehearse-site \
    .whl-rehearse/*.whl || exit 1
  export PYTHONPATH=$PWD/bench/image:/tmp/rehearse-site:$PWD
  python3 -c "import transformers; print('transformers', transformers.__version__)" || exit 1
  python3 -m pytest -q -p no:cacheprovider -m cuda --collect-only tests/ | tail -1 || exit 1
  exec python3 -m pytest -q -p no:cacheprovider tests/test_static_decoding.py \
    tests/test_transformers_devices.py tests/test_gpu_bench.py
fi

OUT=${OUT:-$(mktemp -d)}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
timeout 200 python3 -m pytest -q -m cuda -p no:cacheprovider tests/ 2>&1 | tee "$OUT/cuda-tests.log"
timeout 370 python3 bench/gpu.py --json "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu.txt"
