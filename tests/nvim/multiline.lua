-- Headless Neovim 0.11: a multi-line phi-lsp completion item, accepted with <C-y>, lands in the
-- buffer exactly as the server sent it (no second indentation from 'autoindent').
--   nvim --headless --clean -u multiline.lua FILE.py
-- env: PHI_NVIM_DIR, PHI_CMD (JSON list: a stub server), PHI_LINE (1-based), PHI_OUT
local h = dofile(vim.fs.joinpath(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)), 'harness.lua'))
local out, finish, wait_for = h.out, h.finish, h.wait_for

vim.opt.runtimepath:prepend(os.getenv('PHI_NVIM_DIR'))
vim.lsp.config('phi_lsp', { cmd = vim.json.decode(os.getenv('PHI_CMD')) })
vim.lsp.enable('phi_lsp')

local function main()
  local buf = vim.api.nvim_get_current_buf()
  local row = tonumber(os.getenv('PHI_LINE'))
  wait_for(function()
    local c = vim.lsp.get_clients({ name = 'phi_lsp', bufnr = buf })[1]
    return c and c.initialized
  end, 20000, 'the client')
  out.autoindent = vim.bo[buf].autoindent
  vim.api.nvim_win_set_cursor(0, { row, 0 })
  vim.api.nvim_feedkeys(vim.keycode('A<M-\\>'), 'm', false)
  wait_for(function()
    return #vim.fn.complete_info({ 'items' }).items > 0
  end, 20000, 'completion items')
  out.menu = vim.tbl_map(function(i)
    return { word = i.word, abbr = i.abbr }
  end, vim.fn.complete_info({ 'items' }).items)
  out.line_while_menu = vim.api.nvim_get_current_line()
  vim.api.nvim_feedkeys(vim.keycode('<C-y>'), 'n', false)
  wait_for(function()
    return #vim.api.nvim_buf_get_lines(buf, 0, -1, false) > 3
  end, 5000, 'the remaining lines')
  out.cursor = vim.api.nvim_win_get_cursor(0)
  out.lines_insert = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
  out.mode = vim.api.nvim_get_mode().mode
  vim.api.nvim_feedkeys(vim.keycode('<Esc>'), 'n', false)
  wait_for(function()
    return vim.api.nvim_get_mode().mode == 'n'
  end, 5000, 'normal mode')
  out.lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
  -- The stub has no phiLsp/usageStats: :PhiStatus says so instead of failing.
  out.status_text = vim.api.nvim_exec2('PhiStatus', { output = true }).output
end

vim.api.nvim_create_autocmd('VimEnter', {
  callback = function()
    coroutine.resume(coroutine.create(function()
      local ok, err = pcall(main)
      if not ok then
        out.error = tostring(err)
      end
      finish()
    end))
  end,
})
vim.defer_fn(function()
  out.error = 'timeout (whole script)'
  finish()
end, 40000)
