-- wrk script of bench/frameworks.py: wrk -s bench/frameworks.lua URL -- COOKIE_FILE MIX [LIMIT]
-- COOKIE_FILE: one Cookie header per line (a seeded session each); MIX: read, write or mix (untouched,
-- read, write, new in turn). Requests go round-robin over the sessions. Each response is checked from
-- its body ("kind=K k=N views=V") and headers; done() prints one line "BENCHJSON {...}". LIMIT > 0 stops
-- the thread after that many responses (the quick mode's short runs).

local cookies, kinds, limit, i = {}, nil, 0, 0
local neighbours = "theme=dark; lang=en-GB; _ga=GA1.2.1234567890.1700000000"
-- flat ("group.name" keys): wrk's thread:get crashes copying a table that holds several tables
stats = {responses = 0, ok = 0, bad = 0}
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   for line in io.lines(args[1]) do
      if #line > 0 then cookies[#cookies + 1] = line end
   end
   local mix = args[2]
   if mix == "read" then kinds = {"read"}
   elseif mix == "write" then kinds = {"write"}
   else kinds = {"untouched", "read", "write", "new"} end
   limit = tonumber(args[3] or "0") or 0
end

function request()
   i = i + 1
   local kind = kinds[(i - 1) % #kinds + 1]
   if kind == "new" then
      return wrk.format("GET", "/new", {["Cookie"] = neighbours})
   end
   local k = (i - 1) % #cookies + 1
   return wrk.format("GET", "/" .. kind .. "?k=" .. k, {["Cookie"] = cookies[k]})
end

local function add(t, key, n)
   t[key] = (t[key] or 0) + n
end

local function count(group, name)
   add(stats, group .. "." .. name, 1)
end

function response(status, headers, body)
   stats.responses = stats.responses + 1
   if status == 200 then stats.ok = stats.ok + 1 else stats.bad = stats.bad + 1 end
   local kind, k, views = string.match(body, "kind=(%a+) k=(%d+) views=(%-?%d+)")
   if kind then
      count("kinds", kind)
      for name, _ in pairs(headers) do
         if string.lower(name) == "set-cookie" then count("set_cookie", kind) end
      end
      if tonumber(views) >= 1 then count("found", kind) end
      if kind == "write" then count("writes", k) end
   end
   if limit > 0 and stats.responses >= limit then wrk.thread:stop() end
end

local function json(value)
   if type(value) == "table" then
      local parts = {}
      for key, v in pairs(value) do
         parts[#parts + 1] = string.format("%q:%s", tostring(key), json(v))
      end
      return "{" .. table.concat(parts, ",") .. "}"
   end
   return tostring(value)
end

function done(summary, latency, requests)
   local merged = {responses = 0, ok = 0, bad = 0, kinds = {}, set_cookie = {}, found = {}, writes = {}}
   for _, thread in ipairs(threads) do
      for key, n in pairs(thread:get("stats")) do
         local group, name = string.match(key, "^([%w_]+)%.(.+)$")
         if group then add(merged[group], name, n) else merged[key] = merged[key] + n end
      end
   end
   local e = summary.errors
   merged.requests = summary.requests
   merged.duration_us = summary.duration
   merged.errors = {connect = e.connect, read = e.read, write = e.write, status = e.status, timeout = e.timeout}
   merged.latency_us = {p50 = latency:percentile(50), p99 = latency:percentile(99), mean = latency.mean}
   io.write("BENCHJSON " .. json(merged) .. "\n")
end
