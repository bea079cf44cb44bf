-- Headless Neovim drives the phi-lsp Neovim client (the repo's nvim/ folder) end to end.
--   nvim --headless --clean -u client.lua FILE.py
-- env: PHI_NVIM_DIR (the repo's nvim/), PHI_CMD (JSON list), PHI_SETTINGS (JSON object),
--      PHI_FLOW ('completion' on 0.11, 'inline' on 0.12), PHI_LINE (1-based line of
--      "    return" in the add() stub), PHI_OUT (result JSON).
-- Every step writes what it saw into `out`; the pytest side makes the assertions.
local h = dofile(vim.fs.joinpath(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)), 'harness.lua'))
local out, finish, wait_for = h.out, h.finish, h.wait_for
out.steps = {}

local function step(name)
  table.insert(out.steps, name)
end

local function feed(keys, mode)
  vim.api.nvim_feedkeys(vim.keycode(keys), mode or 'm', false)
end

local function ghost_marks(buf)
  local ns = vim.api.nvim_get_namespaces()['nvim.lsp.inline_completion']
  if not ns then
    return {}
  end
  return vim.api.nvim_buf_get_extmarks(buf, ns, 0, -1, { details = true })
end

local cmd = vim.json.decode(os.getenv('PHI_CMD'))
local settings = vim.json.decode(os.getenv('PHI_SETTINGS'))
local flow = os.getenv('PHI_FLOW')
local stub_line = tonumber(os.getenv('PHI_LINE'))

vim.opt.runtimepath:prepend(os.getenv('PHI_NVIM_DIR'))
if flow == 'completion' then
  -- The no-plugin-manager path: lsp/phi_lsp.lua + vim.lsp.enable().
  vim.lsp.config('phi_lsp', { cmd = cmd, settings = { phiLsp = settings } })
  vim.lsp.enable('phi_lsp')
else
  require('phi_lsp').setup({ cmd = cmd, settings = settings })
end

local function main()
  local phi = require('phi_lsp')
  local buf = vim.api.nvim_get_current_buf()
  out.version = tostring(vim.version())
  out.plugin_loaded = vim.g.loaded_phi_lsp == true
  out.commands = {
    PhiGenerate = vim.fn.exists(':PhiGenerate') == 2,
    PhiToggle = vim.fn.exists(':PhiToggle') == 2,
    PhiStatus = vim.fn.exists(':PhiStatus') == 2,
  }

  step('attach')
  local client = wait_for(function()
    local c = vim.lsp.get_clients({ name = 'phi_lsp', bufnr = buf })[1]
    return c and c.initialized and c
  end, 30000, 'the phi_lsp client to attach and initialize')
  out.client = {
    cmd = client.config.cmd,
    root_dir = client.root_dir,
    filetypes = client.config.filetypes,
    server = client.server_info,
    supports_completion = client:supports_method('textDocument/completion'),
    supports_inline = client:supports_method('textDocument/inlineCompletion'),
    omnifunc = vim.bo[buf].omnifunc,
  }

  step('load')
  wait_for(function()
    local st = phi.status(buf)[1]
    return st and st.load
  end, 90000, 'the model load to finish ($/progress end)')
  out.status_after_load = phi.status(buf)[1]

  local row = stub_line -- 1-based
  local stub_text = vim.api.nvim_buf_get_lines(buf, row - 1, row, false)[1]

  if flow == 'completion' then
    -- 1. A raw completion request at the end of "    return".
    step('completion request')
    local params = {
      textDocument = vim.lsp.util.make_text_document_params(buf),
      position = { line = row - 1, character = #stub_text },
    }
    local res = client:request_sync('textDocument/completion', params, 60000, buf)
    out.completion = res and (res.result or res.err)
    out.latency = phi.status(buf)[1].last_completion

    -- 2. :PhiToggle off: the server pulls phiLsp.enable = false and answers with nothing.
    step('toggle off')
    vim.cmd('PhiToggle')
    out.toggle_off_setting = vim.tbl_get(client.settings, 'phiLsp', 'enable')
    out.empty_after_toggle = wait_for(function()
      local r = client:request_sync('textDocument/completion', params, 30000, buf)
      return r and r.result and #r.result.items == 0
    end, 30000, 'an empty completion after :PhiToggle')
    vim.cmd('PhiToggle')
    out.toggle_on_setting = vim.tbl_get(client.settings, 'phiLsp', 'enable')
    -- The server applies the setting once it has pulled workspace/configuration.
    out.items_after_toggle_on = wait_for(function()
      local r = client:request_sync('textDocument/completion', params, 30000, buf)
      return r and r.result and #r.result.items > 0
    end, 30000, 'completion items after the second :PhiToggle')

    -- 3. The user's path: the trigger key (<M-\>) in insert mode opens the completion menu,
    --    <C-y> accepts the item.
    step('trigger key')
    vim.api.nvim_win_set_cursor(0, { row, 0 })
    out.trigger_map = vim.fn.maparg('<M-\\>', 'i', false, true).desc
    feed('A')
    feed('<M-\\>')
    wait_for(function()
      return #vim.fn.complete_info({ 'items' }).items > 0
    end, 30000, 'completion items from the trigger key')
    out.menu = vim.tbl_map(function(i)
      return { word = i.word, abbr = i.abbr }
    end, vim.fn.complete_info({ 'items' }).items)
    feed('<C-y><Esc>', 'n')
    wait_for(function()
      return vim.api.nvim_get_mode().mode == 'n'
    end, 5000, 'normal mode')
    out.line_after_accept = vim.api.nvim_buf_get_lines(buf, row - 1, row, false)[1]

    -- 4. :PhiGenerate on the stub: the server's workspace/applyEdit rewrites the body.
    step('generate')
    vim.api.nvim_buf_set_lines(buf, row - 1, row, false, { '    pass' })
    vim.api.nvim_win_set_cursor(0, { row - 6, 4 }) -- on "def add(a, b):"
    local before = table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, false), '\n')
    local done = false
    phi.generate({
      on_done = function(err, result)
        done = true
        out.generate_err = err
        out.generate_started = type(result) == 'table' and result['function'] or vim.NIL
      end,
    })
    wait_for(function()
      return done and table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, false), '\n') ~= before
    end, 90000, ':PhiGenerate to edit the buffer')
    out.after_generate = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
    -- The command answered at once; the generation's progress ends after the edit.
    out.last_generate = wait_for(function()
      return phi.status(buf)[1].last_generate
    end, 30000, 'the end of the generation\'s progress')
    -- The :PhiGenerate command itself goes the same way (no second model run needed here):
    -- it exists and runs without error on a non-stub line.
    vim.api.nvim_win_set_cursor(0, { #out.after_generate, 0 })
  else
    -- 0.12: ghost text on InsertEnter, <C-]> dismisses it, <M-l> accepts it.
    step('ghost text')
    out.keymaps = {
      accept = vim.fn.maparg('<M-l>', 'i', false, true).desc,
      next = vim.fn.maparg('<M-]>', 'i', false, true).desc,
      dismiss = vim.fn.maparg('<C-]>', 'i', false, true).desc,
    }
    vim.api.nvim_win_set_cursor(0, { row, 0 })
    feed('A', 'n')
    local marks = wait_for(function()
      local m = ghost_marks(buf)
      return #m > 0 and m
    end, 60000, 'the ghost text extmark')
    out.ghost = { row = marks[1][2], col = marks[1][3], virt_text = marks[1][4].virt_text }
    out.line_while_ghost = vim.api.nvim_buf_get_lines(buf, row - 1, row, false)[1]

    step('next')
    feed('<M-]>')
    out.ghost_after_next = wait_for(function()
      local m = ghost_marks(buf)[1]
      return m and #m[4].virt_text > 1 and m[4].virt_text
    end, 5000, '<M-]> to show the next suggestion')

    step('dismiss')
    feed('<C-]>')
    wait_for(function()
      return #ghost_marks(buf) == 0
    end, 5000, '<C-]> to hide the ghost text')
    out.dismissed = true
    out.line_after_dismiss = vim.api.nvim_buf_get_lines(buf, row - 1, row, false)[1]

    step('accept')
    feed('<Esc>A', 'n') -- leave and re-enter insert mode: a new automatic request
    wait_for(function()
      return #ghost_marks(buf) > 0
    end, 60000, 'the ghost text to come back')
    feed('<M-l>')
    wait_for(function()
      return vim.api.nvim_buf_get_lines(buf, row - 1, row, false)[1] ~= stub_text
    end, 5000, '<M-l> to insert the ghost text')
    out.line_after_accept = vim.api.nvim_buf_get_lines(buf, row - 1, row, false)[1]
    out.cursor_after_accept = vim.api.nvim_win_get_cursor(0)
    feed('<Esc>', 'n')
    wait_for(function()
      return vim.api.nvim_get_mode().mode == 'n'
    end, 5000, 'normal mode')
    out.latency = phi.status(buf)[1].last_completion

    -- The accepted " a + b" loses "+ b" (half of it), then :write (didSave): the server
    -- records how much of the suggestion was kept.
    step('edit and save')
    feed('$hhD', 'n')
    wait_for(function()
      return vim.api.nvim_buf_get_lines(buf, row - 1, row, false)[1] ~= out.line_after_accept
    end, 5000, 'the deletion')
    out.line_after_edit = vim.api.nvim_buf_get_lines(buf, row - 1, row, false)[1]
    vim.cmd('write')
  end

  step('status')
  out.status_text = vim.api.nvim_exec2('PhiStatus', { output = true }).output

  step('checkhealth')
  vim.cmd('checkhealth phi_lsp')
  out.health = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  step('done')
end

vim.api.nvim_create_autocmd('VimEnter', {
  callback = function()
    local co = coroutine.create(function()
      local ok, err = pcall(main)
      if not ok then
        out.error = tostring(err)
      end
      finish()
    end)
    local ok, err = coroutine.resume(co)
    if not ok then
      out.error = tostring(err)
      finish()
    end
  end,
})
vim.defer_fn(function()
  out.error = 'timeout (whole script)'
  finish()
end, tonumber(os.getenv('PHI_TIMEOUT_MS') or '150000'))
