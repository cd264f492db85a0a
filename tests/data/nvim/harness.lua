-- Test harness for the Neovim plugin (tests/client/test_nvim_plugin.py and
-- tests/integration/test_clients_real.py): runs the scenario file $ROUTERD_NVIM_SCENARIO with
--   OUT      the JSON arguments from $ROUTERD_NVIM_ARGS (OUT.out: where results go)
--   out      a table the scenario fills; out.messages collects vim.notify messages
--   lines(buf), count(pattern) -> {value} (User autocommands seen), wait(cond) (20 s)
-- then always writes `out` as JSON and quits, so a Lua error reaches the test as out.error
-- instead of leaving Neovim waiting.
OUT = vim.fn.json_decode(vim.env.ROUTERD_NVIM_ARGS)
out = { messages = {} }
vim.notify = function(msg)
  table.insert(out.messages, msg)
end
function lines(buf)
  return vim.api.nvim_buf_get_lines(buf, 0, -1, false)
end
function count(pattern)
  local n = { value = 0 }
  vim.api.nvim_create_autocmd("User", {
    pattern = pattern,
    callback = function()
      n.value = n.value + 1
    end,
  })
  return n
end
function wait(cond, ms)
  return vim.wait(ms or 20000, cond, 10)
end
local ok, err = pcall(dofile, vim.env.ROUTERD_NVIM_SCENARIO)
if not ok then
  out.error = tostring(err)
end
local f = assert(io.open(OUT.out, "w"))
f:write(vim.fn.json_encode(out))
f:close()
vim.cmd("qa!")
