--- phi-lsp: options (defaults, `vim.g.phi_lsp`, `setup()`'s table), the LSP config they
--- override, and what follows from them: which clients are ours, which mode they run in.
local compat = require('phi_lsp.compat')

local M = {}

M.name = 'phi_lsp'
M.command = 'phiLsp.generateFunction'

---@class phi_lsp.Keymaps
---@field accept string|false  0.12: accept the ghost text (falls back to the key itself)
---@field next string|false    0.12: next suggestion
---@field prev string|false    0.12: previous suggestion
---@field dismiss string|false 0.12: hide the ghost text (falls back to the key itself)
---@field trigger string|false 0.10/0.11: ask for completion items now

---@class phi_lsp.Options
M.defaults = {
  --- Command that starts the server; nil keeps `lsp/phi_lsp.lua`'s `{ 'phi-lsp', 'serve' }`.
  ---@type string[]|nil
  cmd = nil,
  --- The `phiLsp` settings section (model, backend, enable, maxNewTokens, ...).
  ---@type table<string, any>
  settings = {},
  ---@type string[]|nil
  filetypes = nil,
  ---@type string[]|nil
  root_markers = nil,
  --- Call `vim.lsp.enable('phi_lsp')` (0.11+) or start the client on Python buffers (0.10).
  enable = true,
  --- 0.12+: show suggestions as ghost text.
  inline = true,
  --- 0.10/0.11: completion fallback. `autotrigger` asks on the server's trigger characters
  --- (`.`); otherwise use `<C-x><C-o>`, the `trigger` key or a completion plugin.
  completion = { enable = true, autotrigger = false },
  --- Insert-mode keys, buffer-local, only in buffers phi-lsp is attached to. A key that is
  --- already mapped (by you, a plugin or Neovim's defaults) is left alone. false disables one.
  ---@type phi_lsp.Keymaps
  keymaps = {
    accept = '<M-l>',
    next = '<M-]>',
    prev = '<M-[>',
    dismiss = '<C-]>',
    trigger = '<M-\\>',
  },
  --- :checkhealth phi_lsp waits this long for the model to load in its trial server.
  health_timeout_ms = 120000,
}

--- The options in force. Read it as `config.options` each time: `merge()` replaces the table.
---@type phi_lsp.Options
M.options = vim.deepcopy(M.defaults)

--- Merge `opts` over the defaults (and `vim.g.phi_lsp`) into `M.options`.
---@param opts? phi_lsp.Options
function M.merge(opts)
  if opts ~= nil and type(opts) ~= 'table' then
    error('phi_lsp.setup: opts must be a table, got ' .. type(opts))
  end
  M.options = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), vim.g.phi_lsp or {}, opts or {})
  -- Lists replace, they do not merge element by element.
  for _, key in ipairs({ 'cmd', 'filetypes', 'root_markers' }) do
    local value = (opts or {})[key] or (vim.g.phi_lsp or {})[key]
    if value ~= nil then
      M.options[key] = value
    end
  end
end

--- The fields of the LSP config the options override.
---@return table
function M.lsp_overrides()
  local o, out = M.options, {}
  if o.cmd then
    out.cmd = o.cmd
  end
  if o.filetypes then
    out.filetypes = o.filetypes
  end
  if o.root_markers then
    out.root_markers = o.root_markers
  end
  if o.settings and next(o.settings) then
    out.settings = { phiLsp = vim.deepcopy(o.settings) }
  end
  return out
end

--- The config the client starts with: `lsp/phi_lsp.lua`, `vim.lsp.config` and the options.
---@return table
function M.lsp_config()
  if compat.has_011 then
    local ok, resolved = pcall(function()
      return vim.lsp.config[M.name]
    end)
    if ok and resolved then
      return vim.deepcopy(resolved)
    end
  end
  local base = {}
  local file = vim.api.nvim_get_runtime_file('lsp/' .. M.name .. '.lua', false)[1]
  if file then
    local ok, value = pcall(dofile, file)
    if ok and type(value) == 'table' then
      base = value
    end
  end
  return vim.tbl_deep_extend('force', base, M.lsp_overrides())
end

--- phi-lsp clients, optionally only those attached to `bufnr`.
---@param bufnr? integer
---@return vim.lsp.Client[]
function M.clients(bufnr)
  return vim.lsp.get_clients({ name = M.name, bufnr = bufnr })
end

--- 'inline' (0.12 ghost text) or 'completion' (0.10/0.11 completion items).
---@return 'inline'|'completion'
function M.mode()
  if vim.lsp.inline_completion and M.options.inline then
    return 'inline'
  end
  return 'completion'
end

return M
