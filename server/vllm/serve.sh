#!/usr/bin/env bash
# Serve phi-1 to a team with vLLM (OpenAI-compatible, continuous batching).
# TENSOR_PARALLEL: GPUs per replica. ADAPTER: a LoRA folder from `phi-lsp finetune` (optional).
set -euo pipefail
: "${PHI_LSP_API_KEY:?set PHI_LSP_API_KEY: the key editors send}"
args=(
  serve microsoft/phi-1
  --revision main
  --served-model-name phi-1
  --host 0.0.0.0
  --port "${PORT:-8000}"
  --dtype bfloat16
  --max-model-len 2048
  --tensor-parallel-size "${TENSOR_PARALLEL:-1}"
  --gpu-memory-utilization 0.90
  --api-key "$PHI_LSP_API_KEY"
)
if [ -n "${ADAPTER:-}" ]; then
  args+=(--enable-lora --max-lora-rank 64 --lora-modules "phi-1-mine=$ADAPTER")
fi
exec vllm "${args[@]}"
