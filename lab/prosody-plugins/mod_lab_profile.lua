-- A sampling profiler for the lab's Prosody (docs/benchmarks.md, "Profiling
-- Prosody"). Prosody's Lua is stripped, so perf sees only the interpreter;
-- this counts, every EVERY VM instructions, the running function ("S") and
-- every function on the stack ("I", inclusive), and writes each second's
-- counts to DIR/<unix time>.tsv. Loaded only when the lab starts Prosody with
-- PUBPRESENCE_LAB_PROSODY_PROFILE=DIR. It slows Prosody several times over:
-- read shares, not times.
local dir = os.getenv("PUBPRESENCE_LAB_PROSODY_PROFILE");
if not dir or dir == "" then return end

local EVERY = 1000;
local getinfo = debug.getinfo;
local counts = {};

local function key(kind, info)
	return kind .. "\t" .. info.short_src .. ":" .. (info.linedefined or 0) .. " " .. (info.name or "?");
end

local function sample()
	local top = getinfo(2, "Sn");
	if not top then return end
	local k = key("S", top);
	counts[k] = (counts[k] or 0) + 1;
	local seen = {};
	for level = 2, 40 do
		local info = getinfo(level, "Sn");
		if not info then break end
		k = key("I", info);
		if not seen[k] then
			seen[k] = true;
			counts[k] = (counts[k] or 0) + 1;
		end
	end
end

-- Hooks are per thread: the main one, and every coroutine made from now on
-- (stanzas are handled in util.async runners).
local main = debug.getregistry()[1];
if type(main) == "thread" then debug.sethook(main, sample, "", EVERY) end
debug.sethook(sample, "", EVERY);
local co = _G.coroutine;
local create = co.create;
co.create = function (f)
	local thread = create(f);
	debug.sethook(thread, sample, "", EVERY);
	return thread;
end
co.wrap = function (f)
	local thread = co.create(f);
	return function (...)
		local r = table.pack(co.resume(thread, ...));
		if not r[1] then error(r[2], 0) end
		return table.unpack(r, 2, r.n);
	end
end

module:add_timer(1, function ()
	local f = io.open(dir .. "/" .. os.time() .. ".tsv", "w");
	if f then
		for k, v in pairs(counts) do
			f:write(v, "\t", k, "\n");
		end
		f:close();
	end
	counts = {};
	return 1;
end);
