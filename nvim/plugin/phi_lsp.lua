-- phi-lsp: commands and the LspAttach hook. Everything else loads on first use.
if vim.g.loaded_phi_lsp then
  return
end
vim.g.loaded_phi_lsp = true

if vim.fn.has('nvim-0.10') == 0 then
  vim.notify_once('phi-lsp needs Neovim 0.10 or newer', vim.log.levels.WARN)
  return
end

-- Autocmds that set up attached buffers and track progress / latency. They require the module
-- only for events of a phi_lsp client, so startup stays cheap. require('phi_lsp').setup()
-- replaces this group with the module's equivalent one.
local group = vim.api.nvim_create_augroup('phi_lsp', { clear = true })
local function phi_client(ev)
  local client = ev.data and ev.data.client_id and vim.lsp.get_client_by_id(ev.data.client_id)
  return client and client.name == 'phi_lsp' and client or nil
end
vim.api.nvim_create_autocmd('LspAttach', {
  group = group,
  callback = function(ev)
    local client = phi_client(ev)
    if client then
      require('phi_lsp').on_attach(client, ev.buf)
    end
  end,
})
vim.api.nvim_create_autocmd('LspDetach', {
  group = group,
  callback = function(ev)
    local client = phi_client(ev)
    if client then
      require('phi_lsp').on_detach(client, ev.buf)
    end
  end,
})
vim.api.nvim_create_autocmd('LspProgress', {
  group = group,
  callback = function(ev)
    if phi_client(ev) then
      require('phi_lsp')._on_progress(ev)
    end
  end,
})
vim.api.nvim_create_autocmd('LspRequest', {
  group = group,
  callback = function(ev)
    if phi_client(ev) then
      require('phi_lsp')._on_request(ev)
    end
  end,
})

vim.api.nvim_create_user_command('PhiGenerate', function()
  require('phi_lsp').generate()
end, { desc = 'phi-lsp: write the body of the function at the cursor from its docstring' })

vim.api.nvim_create_user_command('PhiToggle', function(cmd)
  local arg = cmd.args
  local enable = nil
  if arg == 'on' then
    enable = true
  elseif arg == 'off' then
    enable = false
  end
  require('phi_lsp').toggle(enable)
end, {
  nargs = '?',
  complete = function()
    return { 'on', 'off' }
  end,
  desc = 'phi-lsp: turn completions on/off (phiLsp.enable)',
})

vim.api.nvim_create_user_command('PhiStatus', function()
  require('phi_lsp').show_status()
end, { desc = 'phi-lsp: model, backend, loading progress, last latency' })
