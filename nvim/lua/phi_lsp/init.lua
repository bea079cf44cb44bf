--- phi-lsp for Neovim: local phi-1 completions for Python.
---
--- Neovim 0.12+: ghost text through the built-in `vim.lsp.inline_completion`.
--- Neovim 0.10/0.11: the server's completion item (omnifunc `<C-x><C-o>`, `vim.lsp.completion`,
--- or any LSP completion plugin such as nvim-cmp and blink.cmp).
---
--- `setup()` is optional: `vim.lsp.enable('phi_lsp')` (0.11+) with this plugin on 'runtimepath'
--- gets the same behaviour with the defaults below. `setup()` only merges options and enables
--- the client; the work happens when the client attaches to a buffer.
---
--- This file is the public API; the work is in config.lua (options, LSP config), compat.lua
--- (Neovim 0.10), ghost.lua (ghost text, completion fallback, keymaps), commands.lua
--- (:PhiGenerate, :PhiToggle) and status.lua (progress, :PhiStatus).
local commands = require('phi_lsp.commands')
local compat = require('phi_lsp.compat')
local config = require('phi_lsp.config')
local ghost = require('phi_lsp.ghost')
local status = require('phi_lsp.status')

local M = {}

M.name = config.name
M.command = config.command
M.defaults = config.defaults

--- Per client: progress, model, last latency.
---@type table<integer, table>
M.state = status.state

-- `M.options` is `config.options`, which setup() replaces: read and write it through there.
setmetatable(M, {
  __index = function(_, key)
    if key == 'options' then
      return config.options
    end
  end,
  __newindex = function(t, key, value)
    if key == 'options' then
      config.options = value
    else
      rawset(t, key, value)
    end
  end,
})

M.lsp_overrides = config.lsp_overrides
M.lsp_config = config.lsp_config
M.clients = config.clients
M.mode = config.mode

M.ghost_visible = ghost.ghost_visible
M.accept = ghost.accept
M.select = ghost.select
M.dismiss = ghost.dismiss
M.trigger = ghost.trigger
M.on_attach = ghost.on_attach
M.on_detach = ghost.on_detach
M._convert = ghost.convert
M._complete_done = ghost.complete_done

M.generate = commands.generate
M.is_enabled = commands.is_enabled
M.toggle = commands.toggle

M.status = status.status
M.status_lines = status.status_lines
M.show_status = status.show_status
M._on_progress = status.on_progress
M._on_request = status.on_request

--- Neovim 0.10 has no vim.lsp.enable: start the client on matching buffers ourselves.
function M._enable_010()
  compat.enable_010(config.name, config.lsp_config)
end

--- Merge `opts` over the defaults (and `vim.g.phi_lsp`) and enable the client.
---@param opts? phi_lsp.Options
function M.setup(opts)
  config.merge(opts)
  if not vim.g.loaded_phi_lsp then
    -- Put on 'runtimepath' after startup (e.g. by a plugin manager's config hook): the
    -- commands live in plugin/phi_lsp.lua.
    vim.cmd.runtime('plugin/phi_lsp.lua')
  end
  M.register_autocmds()
  local overrides = config.lsp_overrides()
  if compat.has_011 then
    if next(overrides) then
      vim.lsp.config(config.name, overrides)
    end
    if config.options.enable then
      vim.lsp.enable(config.name)
    end
  elseif config.options.enable then
    M._enable_010()
  end
end

--- Autocmds for attaching and tracking; idempotent (plugin/phi_lsp.lua and setup() call it).
function M.register_autocmds()
  local group = vim.api.nvim_create_augroup('phi_lsp', { clear = true })
  vim.api.nvim_create_autocmd('LspAttach', {
    group = group,
    callback = function(ev)
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if client and client.name == config.name then
        ghost.on_attach(client, ev.buf)
      end
    end,
  })
  vim.api.nvim_create_autocmd('LspProgress', { group = group, callback = status.on_progress })
  vim.api.nvim_create_autocmd('LspRequest', { group = group, callback = status.on_request })
  vim.api.nvim_create_autocmd('LspDetach', {
    group = group,
    callback = function(ev)
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if client and client.name == config.name then
        ghost.on_detach(client, ev.buf)
      end
    end,
  })
end

return M
