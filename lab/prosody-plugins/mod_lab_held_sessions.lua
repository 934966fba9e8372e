-- Client sessions held inside Prosody, without sockets: the benchmark's
-- way past this machine's open-file limit, which stops real connections
-- short of 20,000 (docs/benchmarks.md, "Past the open-file limit: sessions
-- held inside Prosody"). Loaded on the VirtualHost by `bench --held-sessions`.
--
-- Each session is what mod_c2s makes of a login: a session from the
-- session manager, authenticated, its resource bound (which loads its
-- roster), then an initial presence through the stanza router. Only the
-- socket is missing: what the server writes to the session is dropped,
-- and its address is the one it was given. So the server lists it, states
-- its address, broadcasts its presence and answers probes for it as for
-- any other session.
--
-- Asked for by the lab's admin:
--   <iq type='set' to='DOMAIN'>
--     <sessions xmlns='urn:pubpresence:lab:held-sessions' prefix='base'
--       users='10000' resources='10' sessions='100000' first='127.0.0.2'
--       contact='COMPONENT' rate='1000'/>
--   </iq>
-- Users PREFIX1..PREFIXn get RESOURCES sessions each (r1, r2, ...), SESSIONS
-- in all, the k-th session the
-- k-th address from FIRST (host numbers 0 and 255 skipped, as the lab's
-- simulated users count them). With `contact`, each such user has that JID
-- in its roster with subscription "from", as if it had approved the
-- component's subscription. The answer comes once every session has sent
-- its presence. The sessions are made a batch at a time, at most RATE a
-- second when given: between batches the server reads only a little of
-- each connection, so batches back to back would starve the component.

local st = require "util.stanza";
local sm = require "core.sessionmanager";
local um = require "core.usermanager";

local xmlns = "urn:pubpresence:lab:held-sessions";
local host = module.host;
local BATCH = 200;

-- prefix -> the contact its users have in their roster.
local contacts = {};

module:hook("roster-load", function (event)
	for prefix, contact in pairs(contacts) do
		if event.username:sub(1, #prefix) == prefix and event.username:sub(#prefix + 1):match("^%d+$") then
			event.roster[contact] = { subscription = "from", groups = {} };
		end
	end
end);

-- The lab's `sim::address`: FIRST counted up by `index`, hosts 1..254 of
-- each /24.
local function address(first, index)
	local a, b, c, d = first:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$");
	if not a then return nil; end
	local block = (tonumber(a) << 16) | (tonumber(b) << 8) | tonumber(c);
	local hostnum = math.min(math.max(tonumber(d), 1), 254) - 1;
	local n = index + hostnum;
	block = block + n // 254;
	return ("%d.%d.%d.%d"):format((block >> 16) & 0xff, (block >> 8) & 0xff, block & 0xff, n % 254 + 1);
end

-- Stands for the socket: writes go nowhere.
local function no_socket(ip)
	return {
		ip = function () return ip; end;
		write = function (_, data) return #data; end;
		close = function () end;
	};
end

local function hold(username, resource, ip)
	local session = sm.new_session(no_socket(ip));
	session.host = host;
	session.close = function (self, reason)
		sm.destroy_session(self, reason and (reason.text or reason.condition or tostring(reason)));
	end;
	local ok, err = sm.make_authenticated(session, username);
	if not ok then return nil, err; end
	local bound, _, condition, text = sm.bind_resource(session, resource);
	if not bound then return nil, text or condition; end
	prosody.core_process_stanza(session, st.presence());
	return true;
end

module:hook("iq-set/host/" .. xmlns .. ":sessions", function (event)
	local origin, stanza = event.origin, event.stanza;
	local ask = stanza.tags[1];
	local prefix = ask.attr.prefix;
	local users = tonumber(ask.attr.users);
	local resources = tonumber(ask.attr.resources);
	local first = ask.attr.first;
	if not (prefix and users and resources and first and address(first, 0)) then
		origin.send(st.error_reply(stanza, "modify", "bad-request", "prefix, users, resources and first are needed"));
		return true;
	end
	if ask.attr.contact then
		contacts[prefix] = ask.attr.contact;
	end
	local rate = tonumber(ask.attr.rate);
	local pause = rate and rate > 0 and BATCH / rate or 0;
	local total = math.min(tonumber(ask.attr.sessions) or users * resources, users * resources);
	local made, index = 0, 0;
	local started = os.time();
	local function batch()
		local stop = math.min(index + BATCH, total);
		while index < stop do
			local user = index // resources + 1;
			local username = prefix .. user;
			if index % resources == 0 and not um.user_exists(username, host) then
				um.create_user(username, username, host);
			end
			local ip = address(first, index);
			local ok, err = hold(username, "r" .. (index % resources + 1), ip);
			if ok then
				made = made + 1;
			else
				module:log("warn", "lab_held_sessions: %s: %s", username, err);
			end
			index = index + 1;
		end
		if index < total then
			return pause; -- again, after the server's other work
		end
		module:log("info", "lab_held_sessions: %d of %d sessions held in %d s", made, total, os.time() - started);
		if made == total then
			origin.send(st.reply(stanza));
		else
			origin.send(st.error_reply(stanza, "wait", "internal-server-error",
				("%d of %d sessions could not be held (see the log)"):format(total - made, total)));
		end
	end
	module:add_timer(0, batch);
	return true;
end);
