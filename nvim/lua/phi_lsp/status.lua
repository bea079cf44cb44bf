--- phi-lsp: per-client state and what :PhiStatus reports from it. Tracks the server's
--- `$/progress` (model loading, :PhiGenerate's writing) and the completion latency measured in
--- the client (LspProgress, LspRequest); asks the server for this session's usage figures.
local compat = require('phi_lsp.compat')
local config = require('phi_lsp.config')

local M = {}

--- Per client: progress, model, last latency (and the mode and keymaps set on attach).
---@type table<integer, table>
M.state = {}

--- The state of client `client_id`, created on first use.
---@param client_id integer
---@return table
function M.client_state(client_id)
  local s = M.state[client_id]
  if not s then
    s = { progress = {}, pending = {}, mode = nil, keymaps = {}, skipped_keymaps = {} }
    M.state[client_id] = s
  end
  return s
end

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
function M.on_progress(ev)
  local data = ev.data or {}
  local client = data.client_id and vim.lsp.get_client_by_id(data.client_id)
  if not client or client.name ~= config.name or not data.params then
    return
  end
  local s = M.client_state(client.id)
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
function M.on_request(ev)
  local data = ev.data or {}
  local request_ = data.request
  if not request_ or not TIMED[request_.method] then
    return
  end
  local client = vim.lsp.get_client_by_id(data.client_id)
  if not client or client.name ~= config.name then
    return
  end
  local s = M.client_state(client.id)
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

local function fmt_ms(entry)
  if not entry then
    return 'none yet'
  end
  local ms = entry.ms < 10 and ('%.1f'):format(entry.ms) or ('%.0f'):format(entry.ms)
  return ('%s ms (%s, %s)'):format(ms, entry.method, os.date('%H:%M:%S', entry.at))
end

local USAGE_TIMEOUT_MS = 500

--- This session's usage figures (`phiLsp/usageStats`: shown, accepted, acceptanceRate,
--- retainedShare, p50Ms, p95Ms, enabled); nil when the server does not answer it (in time).
---@param client vim.lsp.Client
---@return table?
function M.usage(client)
  local ok, response = pcall(compat.request_sync, client, 'phiLsp/usageStats', {}, USAGE_TIMEOUT_MS)
  local result = ok and type(response) == 'table' and response.result
  return type(result) == 'table' and result or nil
end

local function percent(x)
  return type(x) == 'number' and ('%.0f%%'):format(x * 100) or 'n/a'
end

local function millis(x)
  if type(x) ~= 'number' then
    return 'n/a'
  end
  return (x < 10 and '%.1f ms' or '%.0f ms'):format(x)
end

--- The :PhiStatus usage line for `usage` (M.usage's answer).
---@param usage table?
---@return string
function M.usage_text(usage)
  if not usage then
    return 'not reported by the server'
  elseif usage.enabled == false then
    return 'usage recording off'
  end
  local count = function(x)
    return type(x) == 'number' and x or 0
  end
  return ('%d shown, %d accepted (%s), kept %s, p50 %s, p95 %s'):format(
    count(usage.shown),
    count(usage.accepted),
    percent(usage.acceptanceRate),
    percent(usage.retainedShare),
    millis(usage.p50Ms),
    millis(usage.p95Ms)
  )
end

--- What :PhiStatus shows, as data.
---@param bufnr? integer
---@return table[]
function M.status(bufnr)
  local out = {}
  for _, client in ipairs(config.clients(bufnr)) do
    local s = M.client_state(client.id)
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
      mode = s.mode or config.mode(),
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
    local any = #config.clients() > 0
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
    local client = vim.lsp.get_client_by_id(st.client_id)
    table.insert(lines, '  usage:      ' .. M.usage_text(client and M.usage(client)))
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
