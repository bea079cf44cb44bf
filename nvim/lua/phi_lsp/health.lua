--- :checkhealth phi_lsp
---
--- 1. Neovim version and which path it gets (ghost text on 0.12+, completion items before).
--- 2. The server command is executable (`phi-lsp` on PATH, or the configured `cmd`).
--- 3. A trial server started with that command answers `initialize`, and the model it is told
---    to use resolves and loads (read from the end of its `$/progress` "loading" report).
--- 4. Running phi-lsp clients: their state as :PhiStatus sees it.
local M = {}

local health = vim.health

local function resolve_cmd(config)
  local cmd = config.cmd
  if type(cmd) ~= 'table' or #cmd == 0 then
    return nil
  end
  return cmd
end

local function section(settings, name)
  local value = settings
  for part in name:gmatch('[^.]+') do
    if type(value) ~= 'table' then
      return vim.NIL
    end
    value = value[part]
  end
  if value == nil then
    return vim.NIL
  end
  return value
end

--- Start `cmd` as a language server, initialize it and wait for its model load to finish.
---@return table result { initialized, server_info, load_title, load_message, messages, error, seconds }
function M.probe(cmd, config, timeout_ms)
  local settings = config.settings or {}
  local result = { messages = {}, progress = {} }
  local exited = false
  local t0 = vim.uv.hrtime()
  local dispatchers = {
    notification = function(method, params)
      if method == '$/progress' and type(params) == 'table' and type(params.value) == 'table' then
        local value = params.value
        if value.kind == 'begin' then
          result.progress[params.token] = value.title
        elseif value.kind == 'end' then
          local title = result.progress[params.token] or ''
          if title:match('^phi%-lsp: loading ') then
            result.load_title = title
            result.load_message = value.message or ''
          end
        end
      elseif method == 'window/showMessage' or method == 'window/logMessage' then
        if type(params) == 'table' and params.type == 1 then
          table.insert(result.messages, params.message)
        end
      end
    end,
    server_request = function(method, params)
      if method == 'workspace/configuration' then
        local items = {}
        for i, item in ipairs((params or {}).items or {}) do
          items[i] = item.section and section(settings, item.section) or settings
        end
        return items, nil
      end
      return vim.NIL, nil
    end,
    on_exit = function(code, signal)
      exited = true
      result.exit = { code = code, signal = signal }
    end,
  }
  local ok, rpc = pcall(vim.lsp.rpc.start, cmd, dispatchers, {
    cwd = type(config.cmd_cwd) == 'string' and config.cmd_cwd or vim.fn.getcwd(),
    env = type(config.cmd_env) == 'table' and config.cmd_env or nil,
  })
  if not ok or not rpc then
    result.error = 'could not start: ' .. tostring(rpc)
    return result
  end
  local init_params = {
    processId = vim.uv.os_getpid(),
    rootUri = vim.uri_from_fname(vim.fn.getcwd()),
    capabilities = {
      window = { workDoneProgress = true },
      workspace = { configuration = true, didChangeConfiguration = { dynamicRegistration = false } },
      textDocument = {},
    },
    initializationOptions = type(settings.phiLsp) == 'table' and next(settings.phiLsp) and settings.phiLsp or nil,
    clientInfo = { name = 'Neovim :checkhealth phi_lsp', version = tostring(vim.version()) },
  }
  local answered = false
  rpc.request('initialize', init_params, function(err, res)
    answered = true
    if err then
      result.error = 'initialize failed: ' .. (err.message or vim.inspect(err))
    else
      result.initialized = true
      result.server_info = res and res.serverInfo
      result.capabilities = res and res.capabilities
    end
  end)
  vim.wait(math.min(timeout_ms, 30000), function()
    return answered or exited
  end, 20)
  result.init_seconds = (vim.uv.hrtime() - t0) / 1e9
  if result.initialized then
    rpc.notify('initialized', vim.empty_dict())
    vim.wait(timeout_ms, function()
      return result.load_message ~= nil or exited
    end, 50)
  elseif not answered and not exited then
    result.error = ('no answer to initialize within %d ms'):format(math.min(timeout_ms, 30000))
  elseif exited and not result.error then
    result.error = ('the server exited (code %s) before answering initialize'):format(
      tostring(result.exit and result.exit.code)
    )
  end
  result.seconds = (vim.uv.hrtime() - t0) / 1e9
  if not exited then
    local done = false
    rpc.request('shutdown', vim.NIL, function()
      done = true
    end)
    vim.wait(3000, function()
      return done or exited
    end, 20)
    rpc.notify('exit', vim.NIL)
    vim.wait(1000, function()
      return exited
    end, 20)
    if not exited then
      rpc.terminate()
    end
  end
  return result
end

function M.check()
  local phi = require('phi_lsp')

  health.start('phi-lsp: Neovim')
  local v = vim.version()
  if vim.fn.has('nvim-0.10') == 0 then
    health.error(('Neovim %s is too old'):format(tostring(v)), { 'phi-lsp needs Neovim 0.10 or newer' })
    return
  end
  if vim.lsp.inline_completion then
    health.ok(('Neovim %s: ghost text through vim.lsp.inline_completion'):format(tostring(v)))
  else
    health.ok(
      ('Neovim %s: completion items (omnifunc <C-x><C-o>, vim.lsp.completion, nvim-cmp / blink.cmp)'):format(
        tostring(v)
      ) .. '; ghost text needs 0.12'
    )
  end
  if vim.fn.has('nvim-0.11') == 0 then
    health.info('0.10: lsp/phi_lsp.lua is not read by Neovim itself; call require("phi_lsp").setup()')
  end

  health.start('phi-lsp: server command')
  local config = phi.lsp_config()
  local cmd = resolve_cmd(config)
  if type(config.cmd) == 'function' then
    health.warn('cmd is a function; it is not checked here')
    return
  end
  if not cmd then
    health.error('no cmd configured', { "vim.lsp.config('phi_lsp', { cmd = { 'phi-lsp', 'serve' } })" })
    return
  end
  local exe = vim.fn.exepath(cmd[1])
  if exe == '' then
    health.error(('%s is not executable (not on PATH)'):format(cmd[1]), {
      "pip install phi-lsp (in the environment whose bin/ is on Neovim's PATH)",
      "or point cmd at it: require('phi_lsp').setup({ cmd = { '/path/to/.venv/bin/phi-lsp', 'serve' } })",
    })
    return
  end
  health.ok(('%s found: %s'):format(cmd[1], exe))
  if cmd[1] ~= 'phi-lsp' then
    local on_path = vim.fn.exepath('phi-lsp')
    health.info('cmd: ' .. table.concat(cmd, ' ') .. (on_path ~= '' and ('; phi-lsp on PATH: ' .. on_path) or ''))
  end

  health.start('phi-lsp: trial server')
  local timeout = phi.options.health_timeout_ms or 120000
  local r = M.probe(cmd, config, timeout)
  if r.error then
    health.error(r.error, {
      'run it in a terminal: ' .. table.concat(cmd, ' '),
      'log: :LspLog and PHI_LSP_HOME/logs/phi-lsp.log',
    })
    return
  end
  local info = r.server_info or {}
  health.ok(
    ('server starts and answers initialize: %s %s (%.1f s)'):format(
      info.name or '?',
      info.version or '',
      r.init_seconds
    )
  )
  local caps = r.capabilities or {}
  if caps.inlineCompletionProvider == nil then
    health.warn('the server does not advertise inlineCompletionProvider')
  end
  if r.load_message == nil then
    health.warn(
      ('no model load reported within %.0f s'):format(timeout / 1000),
      { 'a large model may need longer: setup({ health_timeout_ms = ... })', unpack(r.messages) }
    )
  elseif r.load_message:match(' ready %(') then
    health.ok(('model resolves and loads: %s'):format(r.load_message))
  else
    health.error(('model does not load: %s'):format(r.load_message), {
      'phi-lsp models pull phi-1 (or set phiLsp.model to a GGUF file / HF folder)',
      'phi-lsp doctor --model NAME shows what this machine can run',
    })
  end

  health.start('phi-lsp: running clients')
  local clients = phi.clients()
  if #clients == 0 then
    health.info('no phi-lsp client running (open a Python file)')
  end
  for _, line in ipairs(phi.status_lines()) do
    if #clients > 0 then
      health.info((line:gsub('^%s+', '')))
    end
  end
  for _, client in ipairs(clients) do
    local st = phi.state[client.id]
    if st and st.load and not st.load.ok then
      health.error(('client %d: %s'):format(client.id, st.load.message))
    end
    for lhs, what in pairs(st and st.skipped_keymaps or {}) do
      health.warn(
        ('client %d: %s was already mapped (%s); phi-lsp left it alone'):format(client.id, lhs, tostring(what))
      )
    end
  end
end

return M
