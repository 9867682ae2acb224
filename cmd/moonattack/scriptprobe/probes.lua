-- The hostile-script probes of issue "hostile clients and hostile
-- scripts": each message names one, which runs in on_message and answers
-- "<name> <pcall ok> <result or error>" (or the server closes 1011).
local function big() return string.rep("x", 64 * 1024 * 1024) end
local probes = {
  -- 2 x 10^7 nested parentheses for the compiler.
  loadstring = function()
    local _, err = loadstring("return " .. string.rep("(", 2e7) .. "1" .. string.rep(")", 2e7))
    return tostring(err)
  end,
  -- 40 references to one 64 MiB string, joined.
  concat = function() local b, t = big(), {} for i = 1, 40 do t[i] = b end return #table.concat(t) end,
  -- The same 40 references, encoded.
  json = function()
    local b, t = big(), {}
    for i = 1, 40 do t[i] = b end
    local s, err = json.encode(t)
    return tostring(s and #s) .. " " .. tostring(err)
  end,
  -- 32 MiB made sixteen times larger.
  gsub = function() local s = string.rep("x", 32 * 1024 * 1024) return #(s:gsub("x", "xxxxxxxxxxxxxxxx")) end,
  -- The common trim idiom on 30 KB: quadratic on a run of spaces.
  trim = function() local s = "x" .. string.rep(" ", 30000) .. "x" return #(s:gsub("^%s*(.-)%s*$", "%1")) end,
  -- A backtracking pattern that never matches.
  find = function() return tostring(string.find(string.rep("a", 30000), string.rep("a*", 30) .. "b")) end,
}
return { on_message = function(conn, name)
  local ok, r = pcall(probes[name])
  conn:send(name .. " " .. tostring(ok) .. " " .. tostring(r):sub(1, 120))
end }
