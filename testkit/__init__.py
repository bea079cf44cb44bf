"""What tests/ and bench/ share: the tiny models they build (random, memorising) and the LSP
client harness that drives a real `phi-lsp serve`. Not shipped in the wheel."""
