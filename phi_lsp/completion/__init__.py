"""Editor-agnostic completion: service (cache → debounce → runner), pipeline, prefill, context,
prompt, postprocess. No pygls, no lsprotocol: the lsp layer above turns this into LSP."""
