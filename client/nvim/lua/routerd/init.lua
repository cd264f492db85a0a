-- routerd for Neovim: ask the local model router from the editor.
--
--   :RouterAsk {text}      ask; the answer streams into a scratch buffer
--   :'<,'>RouterAsk {text} ask about the selected lines (sent with the file and line)
--   :RouterAsk! {text}     the same, starting a new conversation
--   :RouterStatus          the daemon's status in a floating window (q closes it)
--   :RouterCancel          cancel the ask shown in the current buffer (else the last one)
--
-- require("routerd").setup({ socket = nil, session = true, split = "botright new" })
--   socket:  the socket path; default as docs/protocol.md §1: $ROUTERD_SOCKET,
--            $XDG_RUNTIME_DIR/routerd/routerd.sock, /run/routerd/routerd.sock
--   session: asks continue one conversation kept by routerd (false: each stands alone)
--   split:   the command that opens the window for an answer
--
-- Speaks the socket protocol itself (routerd.conn, routerd.wire): no Python, no job.
-- After an ask ends (answer, error or cancel) the User autocommand RouterdAskDone fires; the
-- answer buffer's b:routerd_done then holds {finish_reason | error, model, session_id}.

local conn_mod = require("routerd.conn")
local wire = require("routerd.wire")
local uv = vim.uv or vim.loop

local M = {}

M.version = "0.1.0"
M.SYSTEM_SOCKET = "/run/routerd/routerd.sock"

M.config = { socket = nil, session = true, split = "botright new" }
--- The session `:RouterAsk` continues (set from the answers).
M.session_id = nil
--- The id of the last ask, for :RouterCancel outside its buffer.
M.last_request = nil

local conn = nil
local asks = 0

local function notify(message, level)
  vim.notify(message, level or vim.log.levels.INFO, { title = "routerd" })
end

function M.setup(opts)
  M.config = vim.tbl_extend("force", M.config, opts or {})
  if conn then
    conn:close()
    conn = nil
  end
end

local function exists(path)
  return uv.fs_stat(path) ~= nil
end

--- The socket path, chosen as docs/protocol.md §1 says clients do.
function M.socket_path()
  local explicit = M.config.socket or vim.g.routerd_socket
  if explicit and explicit ~= "" then
    return explicit
  end
  local env = vim.env.ROUTERD_SOCKET
  if env and env ~= "" then
    return env
  end
  local runtime = vim.env.XDG_RUNTIME_DIR
  local user = nil
  if runtime and runtime:sub(1, 1) == "/" then
    user = runtime .. "/routerd/routerd.sock"
  end
  if user and exists(user) then
    return user
  end
  if exists(M.SYSTEM_SOCKET) then
    return M.SYSTEM_SOCKET
  end
  return user or M.SYSTEM_SOCKET
end

local function hello_params()
  local v = vim.version()
  return {
    protocol = { 1, 0 },
    client = { name = "routerd.nvim", version = M.version },
    agent = { name = "neovim", type = "editor", version = v.major .. "." .. v.minor .. "." .. v.patch },
  }
end

local function connection()
  local path = M.socket_path()
  if conn == nil or conn.path ~= path then
    if conn then
      conn:close()
    end
    conn = conn_mod.new(path, { hello = hello_params(), on_notice = notify })
  end
  return conn
end

--- Send `method` with `params`; `handlers` as in routerd.conn. Returns the request id.
function M.request(method, params, handlers)
  return connection():request(method, params, handlers)
end

-- --- the answer buffer ------------------------------------------------------------------------

local function split_lines(text)
  local lines, start = {}, 1
  while true do
    local i = text:find("\n", start, true)
    if not i then
      lines[#lines + 1] = text:sub(start)
      return lines
    end
    lines[#lines + 1] = text:sub(start, i - 1)
    start = i + 1
  end
end

local function follow(buf)
  local last = vim.api.nvim_buf_line_count(buf)
  for _, win in ipairs(vim.api.nvim_list_wins()) do
    if vim.api.nvim_win_get_buf(win) == buf then
      vim.api.nvim_win_set_cursor(win, { last, 0 })
    end
  end
end

--- Append `text` at the end of `buf`, continuing its last line.
local function append(buf, text)
  if not vim.api.nvim_buf_is_valid(buf) then
    return
  end
  local lines = split_lines(text)
  local last = vim.api.nvim_buf_line_count(buf)
  local tail = vim.api.nvim_buf_get_lines(buf, last - 1, last, false)[1] or ""
  lines[1] = tail .. lines[1]
  vim.api.nvim_buf_set_lines(buf, last - 1, last, false, lines)
  follow(buf)
end

local function set_line(buf, index, text)
  if vim.api.nvim_buf_is_valid(buf) then
    vim.api.nvim_buf_set_lines(buf, index, index + 1, false, { text })
  end
end

local function open_answer_buffer(query)
  asks = asks + 1
  local buf = vim.api.nvim_create_buf(true, true)
  vim.api.nvim_buf_set_name(buf, "routerd://ask/" .. asks)
  vim.bo[buf].bufhidden = "hide"
  vim.bo[buf].filetype = "markdown"
  local first = split_lines(query)[1]
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, { "# " .. first, "model: (choosing)", "", "" })
  vim.cmd(M.config.split)
  vim.api.nvim_win_set_buf(0, buf)
  return buf
end

--- Fire the User autocommand `pattern`, if anyone listens (else Neovim says so in a message).
local function fire(pattern)
  if vim.fn.exists("#User#" .. pattern) == 1 then
    vim.api.nvim_exec_autocmds("User", { pattern = pattern, modeline = false })
  end
end

local function done(buf, record)
  if vim.api.nvim_buf_is_valid(buf) then
    vim.api.nvim_buf_set_var(buf, "routerd_done", record)
  end
  fire("RouterdAskDone")
end

local function end_line(data)
  local parts = { tostring(wire.value(data.finish_reason) or "done") }
  local tokens = wire.value(data.completion_tokens)
  if tokens then
    parts[#parts + 1] = tokens .. " tokens"
  end
  local seconds = wire.value(data.total_s)
  if seconds then
    parts[#parts + 1] = string.format("%.1fs", seconds)
  end
  local session = wire.value(data.session_id)
  if session then
    parts[#parts + 1] = "session " .. session
  end
  local line = "-- end: " .. table.concat(parts, ", ")
  local reason = wire.value(data.reason)
  if reason then
    line = line .. " (" .. reason .. ")"
  end
  return line
end

--- Ask routerd; the answer streams into a new scratch buffer. `opts`: category, model,
--- max_tokens, temperature, file_context ({file, workspace, line, character, symbol}),
--- new_session (start a new conversation), session (false: none). Returns buffer and id.
function M.ask(query, opts)
  opts = opts or {}
  local buf = open_answer_buffer(query)
  local params = { query = query }
  for _, key in ipairs({ "category", "model", "max_tokens", "temperature", "file_context" }) do
    if opts[key] ~= nil then
      params[key] = opts[key]
    end
  end
  if M.config.session and opts.session ~= false then
    params.session_id = (not opts.new_session and M.session_id) or "new"
  end
  local model = nil
  local id = M.request("route", params, {
    on_event = function(event, data)
      if event == "selected" then
        model = wire.value(data.model)
        local line = "model: " .. tostring(model) .. " on " .. tostring(wire.value(data.service))
        line = line .. " (" .. tostring(wire.value(data.category))
        local attempt = wire.value(data.attempt)
        if attempt and attempt > 1 then
          line = line .. ", attempt " .. attempt
        end
        set_line(buf, 1, line .. ")")
      elseif event == "chunk" then
        append(buf, wire.value(data.text) or "")
      end
    end,
    on_result = function(data)
      data = data or {}
      local session = wire.value(data.session_id)
      if session and params.session_id then
        M.session_id = session
      end
      append(buf, "\n\n" .. end_line(data))
      done(buf, {
        finish_reason = wire.value(data.finish_reason),
        model = wire.value(data.model) or model,
        session_id = session,
      })
    end,
    on_error = function(code, message, data)
      local lines = "\n\n-- error " .. code .. ": " .. message
      local explain = type(data) == "table" and wire.value(data.explain) or nil
      if type(explain) == "table" then
        for _, step in ipairs(explain) do
          lines = lines .. "\n--   " .. tostring(step)
        end
      end
      append(buf, lines)
      done(buf, { error = code, message = message, model = model })
    end,
  })
  if vim.api.nvim_buf_is_valid(buf) then
    vim.api.nvim_buf_set_var(buf, "routerd_request", id)
  end
  M.last_request = id
  return buf, id
end

--- :RouterAsk: the command's arguments, plus the selected lines when given a range.
function M.ask_command(cmd)
  local query = cmd.args or ""
  local opts = { new_session = cmd.bang }
  if cmd.range and cmd.range > 0 then
    local lines = vim.api.nvim_buf_get_lines(0, cmd.line1 - 1, cmd.line2, false)
    local ft = vim.bo.filetype or ""
    query = query .. "\n\n```" .. ft .. "\n" .. table.concat(lines, "\n") .. "\n```"
    local file = vim.api.nvim_buf_get_name(0)
    if file ~= "" then
      opts.file_context = { file = file, line = cmd.line1 - 1, workspace = vim.fn.getcwd() }
    end
  end
  if query:match("^%s*$") then
    notify("usage: :RouterAsk {question}  (or with a range of lines)", vim.log.levels.WARN)
    return
  end
  return M.ask(query, opts)
end

--- :RouterCancel: the ask of the current buffer, else the last one.
function M.cancel()
  local ok, id = pcall(vim.api.nvim_buf_get_var, 0, "routerd_request")
  if not ok then
    id = M.last_request
  end
  if id == nil or conn == nil or not conn:cancel(id) then
    notify("no routerd request in flight")
  end
end

-- --- status -----------------------------------------------------------------------------------

local function duration(seconds)
  seconds = math.floor(seconds or 0)
  local h, m, s = math.floor(seconds / 3600), math.floor(seconds / 60) % 60, seconds % 60
  if h > 0 then
    return string.format("%dh%02dm", h, m)
  end
  return string.format("%dm%02ds", m, s)
end

local function component_line(name, c)
  if type(c) ~= "table" then
    return name .. ": " .. tostring(wire.value(c))
  end
  local summary = wire.value(c.summary)
  if summary then
    local line = name .. ": " .. summary
    local models = wire.value(c.models)
    if type(models) == "number" then
      line = line .. ", " .. models .. " models"
    end
    return line
  end
  local state = wire.value(c.state)
  if state then
    return name .. ": " .. tostring(state)
  end
  local ok, text = pcall(vim.fn.json_encode, c)
  return name .. ": " .. (ok and text:sub(1, 100) or "?")
end

--- The lines :RouterStatus shows for a `status` result.
function M.status_lines(st)
  local lines = {
    string.format("routerd %s (pid %s), up %s", tostring(st.version), tostring(st.pid), duration(st.uptime_s)),
    "socket: " .. tostring(st.socket),
  }
  local components = type(st.components) == "table" and st.components or {}
  local names = vim.tbl_keys(components)
  table.sort(names)
  for _, name in ipairs(names) do
    lines[#lines + 1] = component_line(name, components[name])
  end
  local r = type(st.requests) == "table" and st.requests or {}
  lines[#lines + 1] = string.format(
    "requests: %s total, %s in flight, %s failed, %s cancelled",
    tostring(r.total), tostring(r.in_flight), tostring(r.failed), tostring(r.cancelled)
  )
  local c = type(st.connections) == "table" and st.connections or {}
  lines[#lines + 1] = string.format("connections: %s open", tostring(c.open))
  return lines
end

--- `callback(err, status)` with the daemon's `status` result (err: "code: message").
function M.status(callback)
  M.request("status", vim.empty_dict(), {
    on_result = function(result)
      callback(nil, result)
    end,
    on_error = function(code, message)
      callback(code .. ": " .. message, nil)
    end,
  })
end

--- :RouterStatus: the status in a floating window; `q` closes it.
function M.show_status()
  M.status(function(err, st)
    if err then
      notify(err, vim.log.levels.ERROR)
      fire("RouterdStatus")
      return
    end
    local lines = M.status_lines(st)
    local width = 20
    for _, line in ipairs(lines) do
      width = math.max(width, vim.fn.strdisplaywidth(line))
    end
    width = math.min(width, math.max(vim.o.columns - 4, 20))
    local buf = vim.api.nvim_create_buf(false, true)
    vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
    vim.bo[buf].modifiable = false
    vim.api.nvim_buf_set_var(buf, "routerd_status", true)
    vim.api.nvim_buf_set_keymap(buf, "n", "q", "<cmd>close<cr>", { noremap = true, nowait = true, silent = true })
    vim.api.nvim_open_win(buf, true, {
      relative = "editor",
      width = width,
      height = #lines,
      row = math.max(math.floor((vim.o.lines - #lines) / 2) - 1, 0),
      col = math.max(math.floor((vim.o.columns - width) / 2), 0),
      style = "minimal",
      border = "rounded",
    })
    fire("RouterdStatus")
  end)
end

return M
