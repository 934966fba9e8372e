-- Plays a server busy answering probes, as Prosody is at 100,000 sessions
-- (the answers to 10,000 users' probes took it longer than iq_timeout:
-- docs/benchmarks.md, "Past the open-file limit: sessions held inside
-- Prosody"): after the first ping of each of the component's connections (the
-- round trip behind its start-up probes, before `online`), every probe and
-- ping it sends to its parent domain is handled `lab_slow_probes_seconds`
-- late, in the order it came, so a ping behind probes is still answered after
-- their presences, as Prosody does.
-- Loaded on the component's host by the test that checks that the sessions
-- a restart kept on active wait for such answers (tests/slow_server.rs).

local now = require "util.time".now;

local component = module.host;
-- The component's host is a subdomain of the VirtualHost it probes.
local domain = assert(component:match("^[^.]+%.(.+)$"), "component host without a parent domain");
local delay = module:get_option_number("lab_slow_probes_seconds", 4);

-- Held events, oldest first (queue[head] .. queue[tail]), each with the
-- time it is due.
local queue, head, tail = {}, 1, 0;

local function drain()
	local t = now();
	while queue[head] and queue[head].due <= t do
		local held = queue[head];
		queue[head] = nil;
		head = head + 1;
		held.event.lab_slow_probes_done = true;
		prosody.hosts[domain].events.fire_event(held.name, held.event);
	end
	if queue[head] then
		return math.max(queue[head].due - t, 0.01);
	end
end

-- Whether the first ping of the connection has been let through.
local armed = false;

local function hold(name, what)
	return function (event)
		if event.lab_slow_probes_done or event.stanza.attr.from ~= component then return; end
		if what == "probe" and event.stanza.attr.type ~= "probe" then return; end
		if not armed then
			armed = what == "ping";
			return;
		end
		if not queue[head] then
			module:add_timer(delay, drain);
		end
		tail = tail + 1;
		queue[tail] = { due = now() + delay, name = name, event = event };
		module:log("info", "lab_slow_probes: handling a %s to %s in %d s", what, event.stanza.attr.to, delay);
		return true;
	end
end

local installed = false;
module:hook("component-authenticated", function ()
	armed = false;
	if installed then return; end
	installed = true;
	-- Before Prosody's own handlers (mod_presence, mod_ping at priority 0).
	prosody.hosts[domain].events.add_handler("presence/bare", hold("presence/bare", "probe"), 1000);
	prosody.hosts[domain].events.add_handler("iq-get/host/urn:xmpp:ping:ping", hold("iq-get/host/urn:xmpp:ping:ping", "ping"), 1000);
end);
