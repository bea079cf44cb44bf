"""phi-lsp: a local language server that serves phi-1 completions."""

__version__ = "0.1.0"
