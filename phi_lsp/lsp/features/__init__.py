"""LSP handlers, one module per area; each module's `register(ls)` adds its features."""
