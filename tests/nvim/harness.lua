-- What the headless Neovim test scripts share:
--   local h = dofile(vim.fs.joinpath(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)), 'harness.lua'))
-- `h.out` is the result table; `h.finish()` writes it to $PHI_OUT and quits (once).
local M = { out = {} }
local finished = false

function M.finish()
  if finished then
    return
  end
  finished = true
  vim.fn.writefile({ vim.json.encode(M.out) }, os.getenv('PHI_OUT'))
  vim.cmd('qa!')
end

-- Wait without blocking the event loop (typeahead, LSP replies and timers keep running).
-- Call it from a coroutine.
function M.wait_for(cond, timeout_ms, what)
  local t0 = vim.uv.hrtime()
  while true do
    local ok, value = pcall(cond)
    if ok and value then
      return value
    end
    if (vim.uv.hrtime() - t0) / 1e6 > timeout_ms then
      error('timed out waiting for ' .. what, 0)
    end
    local me = coroutine.running()
    vim.defer_fn(function()
      coroutine.resume(me)
    end, 50)
    coroutine.yield()
  end
end

return M
