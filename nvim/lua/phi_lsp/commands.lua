--- phi-lsp: what the user commands do (plugin/phi_lsp.lua defines them): :PhiGenerate writes
--- a function's body, :PhiToggle turns completions on/off. (:PhiStatus is in status.lua.)
local compat = require('phi_lsp.compat')
local config = require('phi_lsp.config')
local ghost = require('phi_lsp.ghost')

local M = {}

local function client_for(bufnr)
  local client = config.clients(bufnr)[1]
  if not client then
    vim.notify('phi-lsp is not attached to this buffer', vim.log.levels.WARN)
  end
  return client
end

--- :PhiGenerate: write the body of the function (whose body is only a docstring) at the cursor.
--- The server answers at once (`{ function = name }` once it started, nil when there is no such
--- function here, with a message saying why), writes the body under `$/progress` and then
--- sends workspace/applyEdit, which Neovim applies to the buffer; the progress's end message
--- (shown by status.on_progress) says how it went.
---@param opts? { bufnr?: integer, on_done?: fun(err: table?, result: any) }
---@return integer? request id
function M.generate(opts)
  opts = opts or {}
  local bufnr = opts.bufnr or vim.api.nvim_get_current_buf()
  local client = client_for(bufnr)
  if not client then
    return nil
  end
  local win = vim.fn.bufwinid(bufnr)
  local position = vim.lsp.util.make_position_params(win ~= -1 and win or 0, client.offset_encoding).position
  local params = {
    command = config.command,
    arguments = { vim.uri_from_bufnr(bufnr), { line = position.line, character = position.character } },
  }
  local ok, id = compat.request(client, 'workspace/executeCommand', params, function(err, result)
    if err then
      vim.notify('phi-lsp: ' .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
    elseif type(result) == 'table' and result['function'] then
      vim.notify(('phi-lsp: writing %s()…'):format(result['function']), vim.log.levels.INFO)
    end -- nil: the server's own message says why nothing is written
    if opts.on_done then
      opts.on_done(err, result)
    end
  end, bufnr)
  return ok and id or nil
end

--- Whether completions are on (the `phiLsp.enable` setting of the first client, else options).
---@return boolean
function M.is_enabled()
  local client = config.clients()[1]
  local settings = client and (client.settings or (client.config or {}).settings)
  local value = vim.tbl_get(settings or {}, 'phiLsp', 'enable')
  if value == nil then
    value = (config.options.settings or {}).enable
  end
  return value ~= false
end

--- :PhiToggle: turn completions on/off in every phi-lsp client without stopping the server.
--- Updates the client's settings (which the server pulls with workspace/configuration) and
--- sends workspace/didChangeConfiguration.
---@param enable? boolean nil toggles
---@return boolean the new state
function M.toggle(enable)
  if enable == nil then
    enable = not M.is_enabled()
  end
  config.options.settings = vim.tbl_extend('force', config.options.settings or {}, { enable = enable })
  if compat.has_011 then
    -- Clients started later (new roots, restarts) get the same value.
    vim.lsp.config(config.name, { settings = { phiLsp = { enable = enable } } })
  end
  for _, client in ipairs(config.clients()) do
    local tables = { client.settings, client.config and client.config.settings }
    for _, settings in ipairs(tables) do
      if type(settings) == 'table' then
        settings.phiLsp = type(settings.phiLsp) == 'table' and settings.phiLsp or {}
        settings.phiLsp.enable = enable
      end
    end
    local settings = client.settings or (client.config and client.config.settings) or {}
    compat.notify(client, 'workspace/didChangeConfiguration', { settings = settings })
    if not enable and vim.lsp.inline_completion then
      for buf in pairs(client.attached_buffers or {}) do
        ghost.dismiss(buf)
      end
    end
  end
  vim.notify('phi-lsp: completions ' .. (enable and 'on' or 'off'), vim.log.levels.INFO)
  return enable
end

return M
