--- phi-lsp for Neovim: local phi-1 completions for Python.
---
--- Neovim 0.12+: ghost text through the built-in `vim.lsp.inline_completion`.
--- Neovim 0.10/0.11: the server's completion item (omnifunc `<C-x><C-o>`, `vim.lsp.completion`,
--- or any LSP completion plugin such as nvim-cmp and blink.cmp).
---
--- `setup()` is optional: `vim.lsp.enable('phi_lsp')` (0.11+) with this plugin on 'runtimepath'
--- gets the same behaviour with the defaults below. `setup()` only merges options and enables
--- the client; the work happens when the client attaches to a buffer.
local M = {}

M.name = 'phi_lsp'
M.command = 'phiLsp.generateFunction'

local has_011 = vim.fn.has('nvim-0.11') == 1

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

---@type phi_lsp.Options
M.options = vim.deepcopy(M.defaults)

--- Per client: progress, model, last latency.
---@type table<integer, table>
M.state = {}

-- ---------------------------------------------------------------------------------------------
-- Options and enabling
-- ---------------------------------------------------------------------------------------------

--- Merge `opts` over the defaults (and `vim.g.phi_lsp`) and enable the client.
---@param opts? phi_lsp.Options
function M.setup(opts)
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
  if not vim.g.loaded_phi_lsp then
    -- Put on 'runtimepath' after startup (e.g. by a plugin manager's config hook): the
    -- commands live in plugin/phi_lsp.lua.
    vim.cmd.runtime('plugin/phi_lsp.lua')
  end
  M.register_autocmds()
  local overrides = M.lsp_overrides()
  if has_011 then
    if next(overrides) then
      vim.lsp.config(M.name, overrides)
    end
    if M.options.enable then
      vim.lsp.enable(M.name)
    end
  elseif M.options.enable then
    M._enable_010()
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
  if has_011 then
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

--- Neovim 0.10 has no vim.lsp.enable: start the client on matching buffers ourselves.
function M._enable_010()
  local group = vim.api.nvim_create_augroup('phi_lsp.enable', { clear = true })
  local function start(buf)
    local config = M.lsp_config()
    config.name = M.name
    local markers = config.root_markers or { '.git' }
    config.root_dir = vim.fs.root(buf, markers) or vim.fn.getcwd()
    config.root_markers, config.filetypes = nil, nil
    vim.lsp.start(config, { bufnr = buf })
  end
  local filetypes = M.lsp_config().filetypes or { 'python' }
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

-- ---------------------------------------------------------------------------------------------
-- Client helpers (0.10 uses `client.f(...)`, 0.11+ `client:f(...)`)
-- ---------------------------------------------------------------------------------------------

local function request(client, method, params, handler, bufnr)
  if has_011 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

local function notify(client, method, params)
  if has_011 then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

local function supports(client, method)
  if has_011 then
    return client:supports_method(method)
  end
  return client.supports_method(method)
end

--- phi-lsp clients, optionally only those attached to `bufnr`.
---@param bufnr? integer
---@return vim.lsp.Client[]
function M.clients(bufnr)
  return vim.lsp.get_clients({ name = M.name, bufnr = bufnr })
end

local function state(client_id)
  local s = M.state[client_id]
  if not s then
    s = { progress = {}, pending = {}, mode = nil, keymaps = {}, skipped_keymaps = {} }
    M.state[client_id] = s
  end
  return s
end

--- 'inline' (0.12 ghost text) or 'completion' (0.10/0.11 completion items).
---@return 'inline'|'completion'
function M.mode()
  if vim.lsp.inline_completion and M.options.inline then
    return 'inline'
  end
  return 'completion'
end

-- ---------------------------------------------------------------------------------------------
-- Attaching: ghost text (0.12) or completion fallback (0.10/0.11), keymaps
-- ---------------------------------------------------------------------------------------------

--- Whether ghost text is shown in `bufnr` (0.12).
---@param bufnr? integer
function M.ghost_visible(bufnr)
  local ns = vim.api.nvim_get_namespaces()['nvim.lsp.inline_completion']
  if not ns then
    return false
  end
  return #vim.api.nvim_buf_get_extmarks(bufnr or 0, ns, 0, -1, { limit = 1 }) > 0
end

--- Accept the ghost text (0.12). False when there is none.
---@return boolean
function M.accept()
  return vim.lsp.inline_completion ~= nil and vim.lsp.inline_completion.get() or false
end

--- Show the next (count 1) or previous (count -1) suggestion (0.12).
---@param count integer
function M.select(count)
  if vim.lsp.inline_completion then
    vim.lsp.inline_completion.select({ count = count })
  end
end

--- Hide the ghost text in `bufnr` and drop its pending request (0.12). Typing asks again.
---@param bufnr? integer
function M.dismiss(bufnr)
  local ic = vim.lsp.inline_completion
  if not ic then
    return
  end
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  -- 0.12 has no public "dismiss": use the completor's own abort (cancels the pending request
  -- too) where it is reachable, else turn inline completion off and on for the buffer.
  local cap = vim.tbl_get(vim.lsp, '_capability', 'all', 'inline_completion')
  local completor = cap and cap.active and cap.active[bufnr]
  if completor and type(completor.abort) == 'function' then
    completor:abort()
    return
  end
  if ic.is_enabled({ bufnr = bufnr }) then
    ic.enable(false, { bufnr = bufnr })
    ic.enable(true, { bufnr = bufnr })
  end
end

--- Ask for completion items now (0.10/0.11 fallback).
function M.trigger()
  if vim.lsp.completion and vim.lsp.completion.get then
    vim.lsp.completion.get()
  else
    vim.api.nvim_feedkeys(vim.keycode('<C-x><C-o>'), 'n', false)
  end
end

-- Multi-line suggestions in the completion fallback. Neovim inserts a completion word that
-- contains "\n" as typed line breaks: 'autoindent' indents every following line a second time
-- and the completion ends at the first break. So a phi-lsp item inserts its first line only;
-- accepting it with <C-y> puts the remaining lines in, exactly as the server sent them.

local function is_phi_item(item)
  return type(item) == 'table' and item.detail == 'phi-lsp'
end

--- `convert` for vim.lsp.completion: a phi-lsp item's word is its first line.
---@param item lsp.CompletionItem
---@return table
function M._convert(item)
  if not is_phi_item(item) then
    return {}
  end
  local text = item.insertText
  if type(text) ~= 'string' or not text:find('\n', 1, true) then
    return {}
  end
  return { word = (text:gsub('\r?\n.*$', '')) }
end

---@param bufnr integer
function M._complete_done(bufnr)
  local done = vim.v.completed_item
  local lsp_data = vim.tbl_get(done or {}, 'user_data', 'nvim', 'lsp') or {}
  local item = lsp_data.completion_item
  if vim.v.event.reason ~= 'accept' or not is_phi_item(item) then
    return
  end
  local client = lsp_data.client_id and vim.lsp.get_client_by_id(lsp_data.client_id)
  local text = item.insertText
  if not client or client.name ~= M.name or type(text) ~= 'string' then
    return
  end
  local lines = vim.split((text:gsub('\r\n', '\n')), '\n', { plain = true })
  if #lines < 2 or done.word ~= lines[1] then
    return
  end
  local win = vim.fn.bufwinid(bufnr)
  if win == -1 then
    return
  end
  local row, col = unpack(vim.api.nvim_win_get_cursor(win))
  local tick = vim.b[bufnr].changedtick
  -- After CompleteDone returns: Vim is still finishing the completion while it runs.
  vim.schedule(function()
    if not vim.api.nvim_buf_is_valid(bufnr) or vim.b[bufnr].changedtick ~= tick then
      return
    end
    local line = vim.api.nvim_buf_get_lines(bufnr, row - 1, row, false)[1] or ''
    if line:sub(col - #lines[1] + 1, col) ~= lines[1] then
      return -- the inserted word is not right before the cursor: leave the buffer alone
    end
    local rest = { unpack(lines, 2) }
    local last = rest[#rest]
    rest[#rest] = last .. line:sub(col + 1)
    vim.api.nvim_buf_set_text(bufnr, row - 1, col, row - 1, #line, { '', unpack(rest) })
    if vim.api.nvim_win_is_valid(win) then
      vim.api.nvim_win_set_cursor(win, { row + #rest, #last })
    end
  end)
end

local function set_keymap(client_id, bufnr, lhs, rhs, desc)
  if not lhs or lhs == '' then
    return
  end
  local s = state(client_id)
  local existing = vim.api.nvim_buf_call(bufnr, function()
    return vim.fn.maparg(lhs, 'i', false, true)
  end)
  if next(existing) ~= nil and not (existing.desc or ''):match('^phi%-lsp') then
    s.skipped_keymaps[lhs] = existing.desc or existing.rhs or 'mapped'
    return
  end
  vim.keymap.set('i', lhs, rhs, { buffer = bufnr, expr = true, silent = true, desc = 'phi-lsp: ' .. desc })
  s.keymaps[lhs] = desc
end

--- Set up a buffer that the phi-lsp client `client` attached to.
---@param client vim.lsp.Client
---@param bufnr integer
function M.on_attach(client, bufnr)
  if client.name ~= M.name then
    return
  end
  local s = state(client.id)
  local keys = M.options.keymaps or {}
  if
    M.mode() == 'inline'
    and supports(client, 'textDocument/inlineCompletion')
  then
    s.mode = 'inline'
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
    -- Expr maps: with nothing to act on they return their own key, which then does what it did
    -- before (for <C-]>: expand an abbreviation).
    set_keymap(client.id, bufnr, keys.accept, function()
      return M.accept() and '' or keys.accept
    end, 'accept suggestion')
    set_keymap(client.id, bufnr, keys.next, function()
      if not M.ghost_visible(0) then
        return keys.next
      end
      vim.schedule(function()
        M.select(1)
      end)
      return ''
    end, 'next suggestion')
    set_keymap(client.id, bufnr, keys.prev, function()
      if not M.ghost_visible(0) then
        return keys.prev
      end
      vim.schedule(function()
        M.select(-1)
      end)
      return ''
    end, 'previous suggestion')
    set_keymap(client.id, bufnr, keys.dismiss, function()
      if not M.ghost_visible(0) then
        return keys.dismiss
      end
      vim.schedule(function()
        M.dismiss(bufnr)
      end)
      return ''
    end, 'dismiss suggestion')
  elseif M.options.completion and M.options.completion.enable then
    s.mode = 'completion'
    if vim.lsp.completion and vim.lsp.completion.enable then
      -- Applies what the item carries on <C-y> (0.11); autotrigger on the trigger characters.
      vim.lsp.completion.enable(true, client.id, bufnr, {
        autotrigger = M.options.completion.autotrigger and true or false,
        convert = M._convert,
      })
    end
    vim.api.nvim_create_autocmd('CompleteDone', {
      group = vim.api.nvim_create_augroup('phi_lsp.complete.' .. bufnr, { clear = true }),
      buffer = bufnr,
      callback = function()
        M._complete_done(bufnr)
      end,
    })
    if vim.bo[bufnr].omnifunc == '' then
      vim.bo[bufnr].omnifunc = 'v:lua.vim.lsp.omnifunc'
    end
    set_keymap(client.id, bufnr, keys.trigger, function()
      vim.schedule(M.trigger)
      return ''
    end, 'ask for a completion')
  end
end

-- ---------------------------------------------------------------------------------------------
-- Progress and latency tracking (LspProgress, LspRequest)
-- ---------------------------------------------------------------------------------------------

local LOADING = '^phi%-lsp: loading (.+)$'
local WRITING = '^phi%-lsp: writing '

--- How loud the end of a :PhiGenerate is: a warning when no body was written.
---@param message string the progress's end message
local function generate_level(message)
  for _, failed in ipairs({ 'not applied', '^no candidate', '^failed', '^stopped' }) do
    if message:match(failed) then
      return vim.log.levels.WARN
    end
  end
  return vim.log.levels.INFO
end

---@param ev table LspProgress autocmd event
function M._on_progress(ev)
  local data = ev.data or {}
  local client = data.client_id and vim.lsp.get_client_by_id(data.client_id)
  if not client or client.name ~= M.name or not data.params then
    return
  end
  local s = state(client.id)
  local token, value = data.params.token, data.params.value
  if type(value) ~= 'table' then
    return
  end
  if value.kind == 'begin' then
    s.progress[token] = {
      title = value.title,
      message = value.message,
      percentage = value.percentage,
      since = vim.uv.hrtime(),
    }
    local model = value.title and value.title:match(LOADING)
    if model then
      s.loading = { model = model, since = vim.uv.hrtime() }
      s.load = nil
    end
  elseif value.kind == 'report' then
    local p = s.progress[token] or {}
    p.message, p.percentage = value.message or p.message, value.percentage or p.percentage
    s.progress[token] = p
  elseif value.kind == 'end' then
    local p = s.progress[token] or {}
    s.progress[token] = nil
    local title, message = p.title or '', value.message or ''
    if title:match(LOADING) then
      s.loading = nil
      -- "<model> ready (<backend>, 1.2 s)" or "phi-lsp could not load model ..."
      local model, backend, seconds = message:match('^(.-) ready %(([^,]+), ([%d.]+) s%)$')
      if model then
        s.load = { ok = true, model = model, backend = backend, seconds = tonumber(seconds), message = message }
      else
        s.load = { ok = false, model = title:match(LOADING), message = message }
      end
    else
      s.last_task = { title = title, message = message }
      if title:match(WRITING) then
        -- :PhiGenerate's answer only said the body is being written; this is how it went.
        s.last_generate = { method = 'generate', ms = (vim.uv.hrtime() - (p.since or 0)) / 1e6, at = os.time() }
        vim.notify('phi-lsp: ' .. message, generate_level(message))
      end
    end
  end
end

local TIMED = {
  ['textDocument/completion'] = true,
  ['textDocument/inlineCompletion'] = true,
}

---@param ev table LspRequest autocmd event
function M._on_request(ev)
  local data = ev.data or {}
  local request_ = data.request
  if not request_ or not TIMED[request_.method] then
    return
  end
  local client = vim.lsp.get_client_by_id(data.client_id)
  if not client or client.name ~= M.name then
    return
  end
  local s = state(client.id)
  if request_.type == 'pending' then
    s.pending[data.request_id] = vim.uv.hrtime()
  elseif request_.type == 'complete' or request_.type == 'cancel' then
    local t0 = s.pending[data.request_id]
    s.pending[data.request_id] = nil
    if t0 and request_.type == 'complete' then
      s.last_completion = { method = request_.method, ms = (vim.uv.hrtime() - t0) / 1e6, at = os.time() }
    end
  end
end

--- Autocmds for attaching and tracking; idempotent (plugin/phi_lsp.lua and setup() call it).
function M.register_autocmds()
  local group = vim.api.nvim_create_augroup('phi_lsp', { clear = true })
  vim.api.nvim_create_autocmd('LspAttach', {
    group = group,
    callback = function(ev)
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if client and client.name == M.name then
        M.on_attach(client, ev.buf)
      end
    end,
  })
  vim.api.nvim_create_autocmd('LspProgress', { group = group, callback = M._on_progress })
  vim.api.nvim_create_autocmd('LspRequest', { group = group, callback = M._on_request })
  vim.api.nvim_create_autocmd('LspDetach', {
    group = group,
    callback = function(ev)
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if client and client.name == M.name then
        M.on_detach(client, ev.buf)
      end
    end,
  })
end

--- Remove the buffer-local keymaps when the client leaves `bufnr`.
---@param client vim.lsp.Client
---@param bufnr integer
function M.on_detach(client, bufnr)
  if not vim.api.nvim_buf_is_valid(bufnr) then
    return
  end
  for lhs in pairs(state(client.id).keymaps) do
    pcall(vim.keymap.del, 'i', lhs, { buffer = bufnr })
  end
end

-- ---------------------------------------------------------------------------------------------
-- Commands
-- ---------------------------------------------------------------------------------------------

local function client_for(bufnr)
  local client = M.clients(bufnr)[1]
  if not client then
    vim.notify('phi-lsp is not attached to this buffer', vim.log.levels.WARN)
  end
  return client
end

--- :PhiGenerate: write the body of the function (whose body is only a docstring) at the cursor.
--- The server answers at once (`{ function = name }` once it started, nil when there is no such
--- function here, with a message saying why), writes the body under `$/progress` and then
--- sends workspace/applyEdit, which Neovim applies to the buffer; the progress's end message
--- (shown by `_on_progress`) says how it went.
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
    command = M.command,
    arguments = { vim.uri_from_bufnr(bufnr), { line = position.line, character = position.character } },
  }
  local ok, id = request(client, 'workspace/executeCommand', params, function(err, result)
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
  local client = M.clients()[1]
  local settings = client and (client.settings or (client.config or {}).settings)
  local value = vim.tbl_get(settings or {}, 'phiLsp', 'enable')
  if value == nil then
    value = (M.options.settings or {}).enable
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
  M.options.settings = vim.tbl_extend('force', M.options.settings or {}, { enable = enable })
  if has_011 then
    -- Clients started later (new roots, restarts) get the same value.
    vim.lsp.config(M.name, { settings = { phiLsp = { enable = enable } } })
  end
  for _, client in ipairs(M.clients()) do
    local tables = { client.settings, client.config and client.config.settings }
    for _, settings in ipairs(tables) do
      if type(settings) == 'table' then
        settings.phiLsp = type(settings.phiLsp) == 'table' and settings.phiLsp or {}
        settings.phiLsp.enable = enable
      end
    end
    local settings = client.settings or (client.config and client.config.settings) or {}
    notify(client, 'workspace/didChangeConfiguration', { settings = settings })
    if not enable and vim.lsp.inline_completion then
      for buf in pairs(client.attached_buffers or {}) do
        M.dismiss(buf)
      end
    end
  end
  vim.notify('phi-lsp: completions ' .. (enable and 'on' or 'off'), vim.log.levels.INFO)
  return enable
end

local function fmt_ms(entry)
  if not entry then
    return 'none yet'
  end
  local ms = entry.ms < 10 and ('%.1f'):format(entry.ms) or ('%.0f'):format(entry.ms)
  return ('%s ms (%s, %s)'):format(ms, entry.method, os.date('%H:%M:%S', entry.at))
end

--- What :PhiStatus shows, as data.
---@param bufnr? integer
---@return table[]
function M.status(bufnr)
  local out = {}
  for _, client in ipairs(M.clients(bufnr)) do
    local s = state(client.id)
    local settings = vim.tbl_get(client.settings or (client.config or {}).settings or {}, 'phiLsp') or {}
    local tasks = {}
    for _, p in pairs(s.progress) do
      table.insert(tasks, p)
    end
    table.insert(out, {
      client_id = client.id,
      name = client.name,
      server = client.server_info,
      root_dir = client.root_dir or (client.config or {}).root_dir,
      cmd = (client.config or {}).cmd,
      mode = s.mode or M.mode(),
      enabled = settings.enable ~= false,
      model = (s.load and s.load.model) or (s.loading and s.loading.model) or settings.model,
      backend = (s.load and s.load.backend) or settings.backend or 'auto',
      loading = s.loading and { model = s.loading.model, seconds = (vim.uv.hrtime() - s.loading.since) / 1e9 },
      load = s.load,
      progress = tasks,
      last_completion = s.last_completion,
      last_generate = s.last_generate,
      keymaps = s.keymaps,
      skipped_keymaps = s.skipped_keymaps,
    })
  end
  return out
end

--- :PhiStatus text.
---@param bufnr? integer
---@return string[]
function M.status_lines(bufnr)
  local lines = {}
  local all = M.status(bufnr)
  if #all == 0 then
    local any = #M.clients() > 0
    return {
      any and 'phi-lsp: running, but not attached to this buffer'
        or 'phi-lsp: not running (open a Python file; vim.lsp.enable("phi_lsp") or require("phi_lsp").setup())',
    }
  end
  for _, st in ipairs(all) do
    local server = st.server and (st.server.name .. ' ' .. (st.server.version or '')) or 'phi-lsp'
    table.insert(lines, ('%s (client %d)%s'):format(server, st.client_id, st.enabled and '' or ', completions OFF'))
    table.insert(lines, '  model:      ' .. tostring(st.model or 'phi-1 (default)'))
    table.insert(lines, '  backend:    ' .. tostring(st.backend))
    local loading
    if st.loading then
      loading = ('loading %s… (%.1f s)'):format(st.loading.model, st.loading.seconds)
    elseif st.load then
      loading = (st.load.ok and 'ready: ' or 'FAILED: ') .. st.load.message
    else
      loading = 'no progress reported yet'
    end
    table.insert(lines, '  loading:    ' .. loading)
    for _, p in ipairs(st.progress) do
      if not (p.title or ''):match(LOADING) then
        table.insert(lines, '  working:    ' .. (p.title or '') .. (p.message and (': ' .. p.message) or ''))
      end
    end
    table.insert(lines, '  latency:    ' .. fmt_ms(st.last_completion))
    if st.last_generate then
      table.insert(lines, '  generate:   ' .. fmt_ms(st.last_generate))
    end
    local mode = st.mode == 'inline' and 'ghost text (vim.lsp.inline_completion)'
      or 'completion items (omnifunc / completion plugins)'
    table.insert(lines, '  mode:       ' .. mode)
    local keys = {}
    for lhs, desc in pairs(st.keymaps) do
      table.insert(keys, lhs .. ' ' .. desc)
    end
    for lhs, what in pairs(st.skipped_keymaps) do
      table.insert(keys, lhs .. ' NOT mapped (already: ' .. tostring(what) .. ')')
    end
    table.sort(keys)
    if #keys > 0 then
      table.insert(lines, '  keys:       ' .. table.concat(keys, '; '))
    end
    table.insert(lines, '  root:       ' .. tostring(st.root_dir))
  end
  return lines
end

--- :PhiStatus
function M.show_status()
  local chunks = {}
  for _, line in ipairs(M.status_lines(0)) do
    table.insert(chunks, { line .. '\n' })
  end
  vim.api.nvim_echo(chunks, false, {})
end

return M
