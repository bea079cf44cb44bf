--- phi-lsp: Neovim 0.10 compatibility. Client calls (0.10 uses `client.f(...)`, 0.11+
--- `client:f(...)`) and starting the client where Neovim has no `vim.lsp.enable` (0.10).
local M = {}

M.has_011 = vim.fn.has('nvim-0.11') == 1

function M.request(client, method, params, handler, bufnr)
  if M.has_011 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

function M.notify(client, method, params)
  if M.has_011 then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

function M.request_sync(client, method, params, timeout_ms, bufnr)
  if M.has_011 then
    return client:request_sync(method, params, timeout_ms, bufnr)
  end
  return client.request_sync(method, params, timeout_ms, bufnr)
end

--- Run an LSP command (`workspace/executeCommand`; 0.10 has no `client:exec_cmd`).
---@param client vim.lsp.Client
---@param command lsp.Command
---@param bufnr integer
function M.exec_cmd(client, command, bufnr)
  if M.has_011 then
    return client:exec_cmd(command, { bufnr = bufnr })
  end
  return client.request('workspace/executeCommand', {
    command = command.command,
    arguments = command.arguments,
  }, nil, bufnr)
end

function M.supports(client, method)
  if M.has_011 then
    return client:supports_method(method)
  end
  return client.supports_method(method)
end

--- Neovim 0.10 has no vim.lsp.enable: start the client on matching buffers ourselves.
---@param name string the client's name
---@param lsp_config fun(): table the config the client starts with
function M.enable_010(name, lsp_config)
  local group = vim.api.nvim_create_augroup('phi_lsp.enable', { clear = true })
  local function start(buf)
    local config = lsp_config()
    config.name = name
    local markers = config.root_markers or { '.git' }
    config.root_dir = vim.fs.root(buf, markers) or vim.fn.getcwd()
    config.root_markers, config.filetypes = nil, nil
    vim.lsp.start(config, { bufnr = buf })
  end
  local filetypes = lsp_config().filetypes or { 'python' }
  vim.api.nvim_create_autocmd('FileType', {
    group = group,
    pattern = filetypes,
    callback = function(ev)
      start(ev.buf)
    end,
  })
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(buf) and vim.tbl_contains(filetypes, vim.bo[buf].filetype) then
      start(buf)
    end
  end
end

return M
