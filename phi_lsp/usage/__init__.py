"""What happened to phi-lsp's suggestions on this machine: shown, accepted, kept.

Recorded only here (`PHI_LSP_HOME/usage/`), read back by `phi-lsp stats` and by
`phi-lsp finetune --from-usage`; never sent anywhere. The `usage` setting turns it off.
"""
