-- phi-lsp: local phi-1 completions for Python, served by `phi-lsp serve`.
-- Neovim 0.11+ reads this file for `vim.lsp.enable('phi_lsp')`; override any field with
-- `vim.lsp.config('phi_lsp', { ... })` or through `require('phi_lsp').setup({ ... })`.
---@type vim.lsp.Config
return {
  cmd = { 'phi-lsp', 'serve' },
  filetypes = { 'python' },
  root_markers = {
    'pyproject.toml',
    'setup.py',
    'setup.cfg',
    'requirements.txt',
    'Pipfile',
    '.git',
  },
  -- The `phiLsp` section (keys as in the VS Code settings: model, backend, enable, maxNewTokens,
  -- temperature, generateCandidates, ...). The server pulls it with workspace/configuration.
  settings = { phiLsp = {} },
  -- The server decides at `initialize` whether to offer completion items (clients without
  -- inline completion, i.e. Neovim < 0.12), so it gets the same section as initializationOptions.
  before_init = function(params, config)
    local section = vim.tbl_get(config, 'settings', 'phiLsp')
    if type(section) == 'table' and params.initializationOptions == nil and next(section) then
      params.initializationOptions = section
    end
  end,
}
