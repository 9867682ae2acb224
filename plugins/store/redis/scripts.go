package redis

import goredis "github.com/redis/go-redis/v9"

// The scripts that make Incr, Push and CompareAndSet atomic: Redis runs a
// script with no other command in between, so the read, the check, the
// write and the expiry are one step for every node sharing the Redis.
//
// They read values in the codec's form (plugins/store/internal/codec) by
// their tag and headers only. They return strings, not numbers, because
// Redis turns a Lua number into an integer reply and would cut a fraction
// off. A TTL argument is in milliseconds; "0" means none, which keeps the
// key's own expiry (SET ... KEEPTTL) in incr and push and removes it in cas,
// as the store's contract says.

// incrScript: KEYS[1] the key; ARGV[1] the number to add, ARGV[2] the TTL.
// Returns {"ok", encoded new value} or {"type", tag found}.
//
// The sum is Lua's double addition, the same IEEE operation as Go's, and
// "%.17g" prints a double so that it reads back exactly.
var incrScript = goredis.NewScript(`
local cur = redis.call('GET', KEYS[1])
local x = 0
if cur then
  local tag = string.sub(cur, 1, 1)
  if tag ~= 'n' then return {'type', tag} end
  x = tonumber(string.sub(cur, 2, -2))
  if x == nil then return {'corrupt', cur} end
end
x = x + tonumber(ARGV[1])
local enc = 'n' .. string.format('%.17g', x) .. ';'
if ARGV[2] ~= '0' then
  redis.call('SET', KEYS[1], enc, 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], enc, 'KEEPTTL')
end
return {'ok', enc}
`)

// pushScript: KEYS[1] the key; ARGV[1] the encoded element, ARGV[2] its
// size, ARGV[3] the length to keep, ARGV[4] the TTL, ARGV[5] the largest
// size the list may reach (MaxValueBytes less the key's length). Returns
// {"ok", new length}, {"type", tag found} or {"toolarge"}.
//
// It drops the oldest records until the new element fits in the length,
// reading only their headers (length and size), and keeps the rest of the
// bytes as they are: the cost is a copy of the list, as in memory.
var pushScript = goredis.NewScript(`
local cur = redis.call('GET', KEYS[1])
local limit = tonumber(ARGV[3])
local count, size, body = 0, 2, ''
if cur then
  local tag = string.sub(cur, 1, 1)
  if tag ~= 'a' then return {'type', tag} end
  local c, s, pos = string.match(cur, '^a(%d+),(%d+);()')
  if not c then return {'corrupt', 'header'} end
  count, size = tonumber(c), tonumber(s)
  local i = pos
  while count + 1 > limit do
    local l, es, p = string.match(cur, '^(%d+),(%d+):()', i)
    if not l then return {'corrupt', 'record'} end
    i = p + tonumber(l)
    size = size - 1 - tonumber(es)
    count = count - 1
  end
  body = string.sub(cur, i)
end
size = size + 1 + tonumber(ARGV[2])
if size > tonumber(ARGV[5]) then return {'toolarge'} end
count = count + 1
local enc = 'a' .. string.format('%d', count) .. ',' .. string.format('%d', size) .. ';' ..
  body .. string.format('%d', string.len(ARGV[1])) .. ',' .. ARGV[2] .. ':' .. ARGV[1]
if ARGV[4] ~= '0' then
  redis.call('SET', KEYS[1], enc, 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], enc, 'KEEPTTL')
end
return {'ok', string.format('%d', count)}
`)

// casScript: KEYS[1] the key; ARGV[1] how to compare ("z": the key must be
// absent, "n": a number equal to ARGV[2], "e": bytes equal to ARGV[2]),
// ARGV[3] the new encoded value ("" deletes), ARGV[4] the TTL. Returns "1"
// if it stored, "0" if the comparison failed. A table (tag a or m) equals
// neither a number nor any encoded scalar.
var casScript = goredis.NewScript(`
local cur = redis.call('GET', KEYS[1])
local kind = ARGV[1]
if kind == 'z' then
  if cur then return '0' end
elseif not cur then
  return '0'
elseif kind == 'n' then
  if string.sub(cur, 1, 1) ~= 'n' or tonumber(string.sub(cur, 2, -2)) ~= tonumber(ARGV[2]) then return '0' end
elseif cur ~= ARGV[2] then
  return '0'
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
elseif ARGV[4] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[3])
end
return '1'
`)
