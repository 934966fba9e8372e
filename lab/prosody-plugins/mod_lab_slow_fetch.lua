-- Plays a pubsub service that takes long to answer a fetch of a whole node,
-- as Prosody itself does with 100,000 items on it (docs/benchmarks.md,
-- "Past the open-file limit: sessions held inside Prosody"): every request for the items of
-- `lab_slow_fetch_node` is answered `lab_slow_fetch_seconds` late. Loaded on
-- the pubsub service by the test that checks how long the component and
-- the reference client wait for such an answer (tests/slow_server.rs).

local node = module:get_option_string("lab_slow_fetch_node", "presence/active");
local delay = module:get_option_number("lab_slow_fetch_seconds", 3);
-- Where mod_pubsub takes every pubsub request (before the iq-get/ event).
local event_name = "iq/host/http://jabber.org/protocol/pubsub:pubsub";

module:hook(event_name, function (event)
	if event.lab_slow_fetch_done or event.stanza.attr.type ~= "get" then return; end
	local items = event.stanza.tags[1]:get_child("items");
	if not items or items.attr.node ~= node then return; end
	module:log("info", "lab_slow_fetch: answering the fetch of %s from %s in %d s", node, event.stanza.attr.from, delay);
	module:add_timer(delay, function ()
		event.lab_slow_fetch_done = true;
		module:fire_event(event_name, event);
	end);
	return true;
end, 100);
