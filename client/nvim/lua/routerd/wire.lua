-- The framing of the routerd wire protocol (docs/protocol.md §2), in Lua: each message is a
-- 4-byte big-endian length, then that many bytes holding one msgpack map.
--
-- Pure: no I/O. The parser is a push parser: feed it bytes as they arrive, in any pieces,
-- and it hands back every whole frame body, keeping the rest for the next feed.

local M = {}

--- The daemon's default frame limit; the parser refuses a longer length prefix.
M.DEFAULT_MAX = 16 * 1024 * 1024

local function u32be(n)
  return string.char(
    math.floor(n / 0x1000000) % 256,
    math.floor(n / 0x10000) % 256,
    math.floor(n / 0x100) % 256,
    n % 256
  )
end

--- One message (a Lua table) as a whole frame: length prefix and msgpack body.
function M.frame(message)
  local body = vim.mpack.encode(message)
  return u32be(#body) .. body
end

--- msgpack nil arrives as vim.NIL: turn it back into Lua's nil.
function M.value(x)
  if x == vim.NIL then
    return nil
  end
  return x
end

local Parser = {}
Parser.__index = Parser

--- A push parser for frames of at most `max` bytes (default M.DEFAULT_MAX).
function M.parser(max)
  return setmetatable({ chunks = {}, size = 0, need = 4, max = max or M.DEFAULT_MAX }, Parser)
end

--- Feed `data` (a string). Returns the list of whole frame bodies now available (strings,
--- oldest first) and, when the stream can no longer be trusted (a zero or oversize length),
--- an error message as a second value; the parser then stays broken.
function Parser:feed(data)
  if self.broken then
    return {}, self.broken
  end
  if #data > 0 then
    self.chunks[#self.chunks + 1] = data
    self.size = self.size + #data
  end
  local bodies = {}
  -- Pieces are joined only once the frame under way can be complete, so feeding a frame one
  -- byte at a time costs a join per frame, not per byte.
  if self.size < self.need then
    return bodies
  end
  local buf = table.concat(self.chunks)
  local pos = 1
  while #buf - pos + 1 >= 4 do
    local b1, b2, b3, b4 = buf:byte(pos, pos + 3)
    local n = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
    if n == 0 or n > self.max then
      self.broken = n == 0 and "a frame of length 0" or ("a frame of " .. n .. " bytes, over the limit")
      self.chunks, self.size, self.need = {}, 0, math.huge
      return bodies, self.broken
    end
    if #buf - pos + 1 < 4 + n then
      self.need = 4 + n
      break
    end
    self.need = 4
    bodies[#bodies + 1] = buf:sub(pos + 4, pos + 3 + n)
    pos = pos + 4 + n
  end
  local rest = buf:sub(pos)
  self.chunks = { rest }
  self.size = #rest
  return bodies
end

--- Decode one frame body: the message table, or nil and why.
function M.decode(body)
  local ok, message = pcall(vim.mpack.decode, body)
  if not ok then
    return nil, "undecodable frame: " .. tostring(message)
  end
  if type(message) ~= "table" then
    return nil, "a frame that is not a map"
  end
  return message
end

return M
