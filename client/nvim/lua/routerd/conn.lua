-- One connection to routerd over its Unix socket, with Neovim's libuv pipes.
--
-- Contract (docs/protocol.md §3): requests get ids from 1 up; each id gets exactly one final
-- frame (`result`, `error`, or the event `end`), and non-final events before it; frames of
-- different requests interleave. So every request carries its own handlers:
--
--   on_event(event, data)        a non-final event of a streaming request
--   on_result(result)            the `result`, or the data of the `end` event
--   on_error(code, message, data)  the `error` frame, or the connection failing under it
--
-- Handlers run on Neovim's main loop (libuv callbacks are scheduled), so they may use any API.
-- The connection opens on the first request (sending `hello` first) and opens again on the
-- next request after it broke. A connection that fails reports `unreachable` (it never opened)
-- or `connection_lost` to every request in flight.

local wire = require("routerd.wire")
local uv = vim.uv or vim.loop

local M = {}

local Conn = {}
Conn.__index = Conn

--- A connection to the socket `path` (not opened yet). `opts.hello`: params of `hello`;
--- `opts.on_notice(message, level)`: for what belongs to no request (connection errors).
function M.new(path, opts)
  opts = opts or {}
  return setmetatable({
    path = path,
    hello = opts.hello,
    on_notice = opts.on_notice or function() end,
    state = "closed", -- closed | connecting | open
    pipe = nil,
    parser = nil,
    queue = {},
    handlers = {},
    next_id = 1,
    hello_result = nil,
  }, Conn)
end

function Conn:_write(bytes)
  if self.state == "open" then
    self.pipe:write(bytes)
  else
    self.queue[#self.queue + 1] = bytes
    if self.state == "closed" then
      self:_open()
    end
  end
end

function Conn:_open()
  self.state = "connecting"
  self.parser = wire.parser()
  local pipe = uv.new_pipe(false)
  self.pipe = pipe
  -- hello goes first, ahead of whatever is queued.
  if self.hello then
    local id = self:_new_id()
    self.handlers[id] = {
      on_result = function(result)
        self.hello_result = result
        local max = wire.value(result.max_frame_size)
        if type(max) == "number" then
          self.parser.max = max
        end
      end,
      on_error = function(code, message)
        if code ~= "unreachable" and code ~= "connection_lost" then
          self.on_notice("routerd refused hello: " .. code .. ": " .. message, vim.log.levels.ERROR)
        end
      end,
    }
    table.insert(self.queue, 1, wire.frame({ type = "request", id = id, method = "hello", params = self.hello }))
  end
  local started, start_err = pipe:connect(self.path, function(err)
    vim.schedule(function()
      if self.pipe ~= pipe then
        return -- closed meanwhile
      end
      if err then
        self:_fail("unreachable", "cannot reach routerd at " .. self.path .. ": " .. err)
        return
      end
      self.state = "open"
      pipe:read_start(function(read_err, data)
        vim.schedule(function()
          if self.pipe == pipe then
            self:_on_read(read_err, data)
          end
        end)
      end)
      local queued = self.queue
      self.queue = {}
      for _, bytes in ipairs(queued) do
        pipe:write(bytes)
      end
    end)
  end)
  if not started then -- refused at once (a path too long for a socket, say): no callback
    vim.schedule(function()
      if self.pipe == pipe then
        self:_fail("unreachable", "cannot reach routerd at " .. self.path .. ": " .. tostring(start_err))
      end
    end)
  end
end

function Conn:_new_id()
  local id = self.next_id
  self.next_id = id + 1
  return id
end

function Conn:_on_read(err, data)
  if err then
    self:_fail("connection_lost", "the connection to routerd broke: " .. err)
    return
  end
  if data == nil then
    self:_fail("connection_lost", "routerd closed the connection")
    return
  end
  local bodies, broken = self.parser:feed(data)
  for _, body in ipairs(bodies) do
    local message, why = wire.decode(body)
    if message then
      self:_dispatch(message)
    else
      self.on_notice("routerd sent " .. why, vim.log.levels.WARN)
    end
  end
  if broken then
    self:_fail("connection_lost", "routerd sent " .. broken)
  end
end

function Conn:_dispatch(message)
  local id = wire.value(message.id)
  if id == nil then
    -- An error of the connection itself (docs/protocol.md §3).
    self.on_notice(
      "routerd: " .. tostring(wire.value(message.code)) .. ": " .. tostring(wire.value(message.message)),
      vim.log.levels.ERROR
    )
    return
  end
  local handlers = self.handlers[id]
  if handlers == nil then
    return -- cancelled or unknown: late frames are dropped
  end
  local kind = message.type
  if kind == "event" and message.event ~= "end" then
    if handlers.on_event then
      handlers.on_event(message.event, wire.value(message.data))
    end
    return
  end
  self.handlers[id] = nil
  if kind == "result" then
    if handlers.on_result then
      handlers.on_result(wire.value(message.result))
    end
  elseif kind == "event" then
    if handlers.on_result then
      handlers.on_result(wire.value(message.data))
    end
  elseif handlers.on_error then
    handlers.on_error(
      tostring(wire.value(message.code) or "internal"),
      tostring(wire.value(message.message) or ""),
      wire.value(message.data)
    )
  end
end

function Conn:_fail(code, reason)
  local pipe = self.pipe
  self.pipe, self.state, self.queue = nil, "closed", {}
  if pipe and not pipe:is_closing() then
    pipe:close()
  end
  local handlers = self.handlers
  self.handlers = {}
  for _, h in pairs(handlers) do
    if h.on_error then
      h.on_error(code, reason, nil)
    end
  end
end

--- Send request `method` with `params` (a table; nil for none). Returns its id.
function Conn:request(method, params, handlers)
  local id = self:_new_id()
  self.handlers[id] = handlers or {}
  local message = { type = "request", id = id, method = method }
  if params ~= nil then
    message.params = params
  end
  self:_write(wire.frame(message))
  return id
end

--- Whether request `id` still waits for its final frame.
function Conn:in_flight(id)
  return self.handlers[id] ~= nil
end

--- Ask the daemon to cancel request `id`; its final frame (`error` `cancelled`) still comes.
function Conn:cancel(id)
  if self.handlers[id] ~= nil then
    self:_write(wire.frame({ type = "cancel", id = id }))
    return true
  end
  return false
end

--- Close the connection; requests in flight end with `connection_lost`.
function Conn:close()
  self:_fail("connection_lost", "the connection was closed")
end

return M
