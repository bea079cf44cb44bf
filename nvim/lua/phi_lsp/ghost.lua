--- phi-lsp: suggestions in the buffer. Ghost text through `vim.lsp.inline_completion` (0.12:
--- accept, select, dismiss) or the completion-item fallback (0.10/0.11: trigger, multi-line
--- items), and the buffer-local keymaps set when the client attaches.
local compat = require('phi_lsp.compat')
local config = require('phi_lsp.config')
local status = require('phi_lsp.status')

local M = {}

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
--
-- The item's command (`phiLsp.accepted`, which starts the server following the text) must run
-- once the whole text is in. Neovim 0.11+ runs an accepted item's command on CompleteDone, at
-- once, so `convert` hands Neovim a copy without it and complete_done runs it; 0.10 runs none.

local function is_phi_item(item)
  return type(item) == 'table' and item.detail == 'phi-lsp'
end

--- `convert` for vim.lsp.completion: a phi-lsp item's word is its first line; its command is
--- kept aside (user_data.phi_lsp) for complete_done.
---@param item lsp.CompletionItem
---@param client_id? integer the client the item came from
---@return table
function M.convert(item, client_id)
  if not is_phi_item(item) then
    return {}
  end
  local out = {}
  local text = item.insertText
  if type(text) == 'string' and text:find('\n', 1, true) then
    out.word = (text:gsub('\r?\n.*$', ''))
  end
  if item.command and client_id then
    local bare = vim.deepcopy(item)
    bare.command = nil
    out.user_data = {
      nvim = { lsp = { completion_item = bare, client_id = client_id } },
      phi_lsp = { command = item.command },
    }
  end
  return out
end

--- The command complete_done runs for an accepted item: the one `convert` kept aside, or on
--- Neovim without vim.lsp.completion.enable (0.10) the item's own; nil when Neovim runs it.
local function own_command(done, item)
  local kept = vim.tbl_get(done, 'user_data', 'phi_lsp', 'command')
  if kept then
    return kept
  end
  if not (vim.lsp.completion and vim.lsp.completion.enable) then
    return item.command
  end
end

local function run(client, command, bufnr)
  if type(command) == 'table' and command.command then
    compat.exec_cmd(client, command, bufnr)
  end
end

--- CompleteDone in `bufnr`: after a multi-line phi-lsp item's first line, put in the rest;
--- then run the item's command.
---@param bufnr integer
function M.complete_done(bufnr)
  local done = vim.v.completed_item
  local lsp_data = vim.tbl_get(done or {}, 'user_data', 'nvim', 'lsp') or {}
  local item = lsp_data.completion_item
  if vim.v.event.reason ~= 'accept' or not is_phi_item(item) then
    return
  end
  local client = lsp_data.client_id and vim.lsp.get_client_by_id(lsp_data.client_id)
    or config.clients(bufnr)[1]
  if not client or client.name ~= config.name then
    return
  end
  local command = own_command(done, item)
  local text = item.insertText
  local lines = type(text) == 'string' and vim.split((text:gsub('\r\n', '\n')), '\n', { plain = true }) or {}
  if #lines < 2 or done.word ~= lines[1] then
    run(client, command, bufnr) -- all of it is in already
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
      return -- edited meanwhile: what is in the buffer is not the suggestion (no command)
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
    run(client, command, bufnr)
  end)
end

local function set_keymap(client_id, bufnr, lhs, rhs, desc)
  if not lhs or lhs == '' then
    return
  end
  local s = status.client_state(client_id)
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

--- An expr map that runs `action` after the map returns when ghost text is shown, else
--- returns its own key, which then does what it did before (for <C-]>: expand an abbreviation).
local function on_ghost(lhs, action)
  return function()
    if not M.ghost_visible(0) then
      return lhs
    end
    vim.schedule(action)
    return ''
  end
end

--- Set up a buffer that the phi-lsp client `client` attached to.
---@param client vim.lsp.Client
---@param bufnr integer
function M.on_attach(client, bufnr)
  if client.name ~= config.name then
    return
  end
  local s = status.client_state(client.id)
  local options = config.options
  local keys = options.keymaps or {}
  if config.mode() == 'inline' and compat.supports(client, 'textDocument/inlineCompletion') then
    s.mode = 'inline'
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
    set_keymap(client.id, bufnr, keys.accept, function()
      return M.accept() and '' or keys.accept
    end, 'accept suggestion')
    set_keymap(client.id, bufnr, keys.next, on_ghost(keys.next, function()
      M.select(1)
    end), 'next suggestion')
    set_keymap(client.id, bufnr, keys.prev, on_ghost(keys.prev, function()
      M.select(-1)
    end), 'previous suggestion')
    set_keymap(client.id, bufnr, keys.dismiss, on_ghost(keys.dismiss, function()
      M.dismiss(bufnr)
    end), 'dismiss suggestion')
  elseif options.completion and options.completion.enable then
    s.mode = 'completion'
    if vim.lsp.completion and vim.lsp.completion.enable then
      -- Applies what the item carries on <C-y> (0.11); autotrigger on the trigger characters.
      vim.lsp.completion.enable(true, client.id, bufnr, {
        autotrigger = options.completion.autotrigger and true or false,
        convert = function(item)
          return M.convert(item, client.id)
        end,
      })
    end
    vim.api.nvim_create_autocmd('CompleteDone', {
      group = vim.api.nvim_create_augroup('phi_lsp.complete.' .. bufnr, { clear = true }),
      buffer = bufnr,
      callback = function()
        M.complete_done(bufnr)
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

--- Remove the buffer-local keymaps when the client leaves `bufnr`.
---@param client vim.lsp.Client
---@param bufnr integer
function M.on_detach(client, bufnr)
  if not vim.api.nvim_buf_is_valid(bufnr) then
    return
  end
  for lhs in pairs(status.client_state(client.id).keymaps) do
    pcall(vim.keymap.del, 'i', lhs, { buffer = bufnr })
  end
end

return M
