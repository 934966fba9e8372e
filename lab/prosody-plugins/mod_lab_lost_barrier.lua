-- Plays a server whose answer to the component's first round trip after it
-- authenticates never comes: the ping that the component sends behind its
-- start-up probes (docs/protocol.md, "What the component publishes, and
-- when", step 5) is left unanswered, once per authentication. Loaded on the
-- component's host by the test that checks what the start-up does without
-- that proof (tests/fast_restart.rs).

local component = module.host;
-- The component's host is a subdomain of the VirtualHost it pings.
local domain = assert(component:match("^[^.]+%.(.+)$"), "component host without a parent domain");
local armed, installed = false, false;

local function leave_unanswered(event)
	if armed and event.stanza.attr.from == component then
		armed = false;
		module:log("info", "lab_lost_barrier: leaving the component's first ping unanswered");
		return true;
	end
end

module:hook("component-authenticated", function ()
	armed = true;
	if not installed then
		-- Before mod_ping (priority 0) answers it.
		prosody.hosts[domain].events.add_handler("iq-get/host/urn:xmpp:ping:ping", leave_unanswered, 10);
		installed = true;
	end
end);
