-- Headless Neovim 0.11 drives phi-lsp: attach, wait for the model, ask for a completion at
-- the cursor both with a raw request and through the omnifunc popup, write the results.
-- nvim --headless --clean -u complete.lua FILE   (env: PHI_CMD = JSON list, PHI_LINE, PHI_COL, PHI_OUT)
local h = dofile(vim.fs.joinpath(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)), 'harness.lua'))
local out, finish = h.out, h.finish

local function main()
  local line, col = tonumber(os.getenv('PHI_LINE')), tonumber(os.getenv('PHI_COL'))
  local client_id = vim.lsp.start({
    name = 'phi_lsp',
    cmd = vim.json.decode(os.getenv('PHI_CMD')),
    root_dir = vim.fn.getcwd(),
    settings = { phiLsp = { maxNewTokens = 24, nThreads = 2 } },
  })
  local client = vim.lsp.get_client_by_id(client_id)
  vim.wait(10000, function() return client.initialized end, 50)
  out.version = tostring(vim.version())
  out.supports_completion = client:supports_method('textDocument/completion')
  -- Normal mode cannot put the cursor past the last character, so the position is explicit.
  local params = {
    textDocument = vim.lsp.util.make_text_document_params(0),
    position = { line = line, character = col },
  }
  -- Completions are empty while the model loads in the background: ask until one arrives.
  local result
  vim.wait(60000, function()
    local res = client:request_sync('textDocument/completion', params, 10000, 0)
    result = res and res.result
    return result ~= nil and result.items ~= nil and #result.items > 0
  end, 200)
  out.items = result and result.items or {}
  -- The user's path: <C-x><C-o> in insert mode at the end of the line.
  vim.bo.omnifunc = 'v:lua.vim.lsp.omnifunc'
  vim.api.nvim_win_set_cursor(0, { line + 1, 0 })
  vim.defer_fn(function()
    local info = vim.fn.complete_info({ 'items' })
    out.omni = vim.tbl_map(function(i) return i.word end, info.items)
    out.line_after = vim.api.nvim_get_current_line()
    finish()
  end, 3000)
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes('A<C-x><C-o>', true, false, true), 'n', false)
end

vim.api.nvim_create_autocmd('VimEnter', { callback = function()
  local ok, err = pcall(main)
  if not ok then out.error = tostring(err); finish() end
end })
vim.defer_fn(function() out.error = 'timeout'; finish() end, 120000)
