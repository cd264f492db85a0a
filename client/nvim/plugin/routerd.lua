-- routerd's commands (the work is in lua/routerd/init.lua, loaded on first use).
if vim.g.loaded_routerd then
  return
end
vim.g.loaded_routerd = 1

vim.api.nvim_create_user_command("RouterAsk", function(cmd)
  require("routerd").ask_command(cmd)
end, { nargs = "*", range = true, bang = true, desc = "Ask routerd; the answer streams into a buffer" })

vim.api.nvim_create_user_command("RouterStatus", function()
  require("routerd").show_status()
end, { nargs = 0, desc = "routerd's status in a floating window" })

vim.api.nvim_create_user_command("RouterCancel", function()
  require("routerd").cancel()
end, { nargs = 0, desc = "Cancel the routerd ask of this buffer (else the last one)" })
