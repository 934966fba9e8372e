-- Plays Prosody 13 cutting off a reader of a whole node: its server_epoll
-- closes a connection whose unsent data would pass max_send_buffer_size
-- (32 MiB unless set), which one answer holding presence/active passes near
-- 80,000 sessions (docs/benchmarks.md, "Past the open-file limit: sessions
-- held inside Prosody"). Here the connection that sends the first
-- `lab_cut_fetch_times` fetches of `lab_cut_fetch_node` from a session of
-- type `lab_cut_fetch_origin` ("component" or "c2s") is closed instead of
-- answered. Loaded on the pubsub service by the tests that check what the
-- component and the reference client say then (tests/slow_server.rs).

local node = module:get_option_string("lab_cut_fetch_node", "presence/active");
local times = module:get_option_number("lab_cut_fetch_times", 1);
local origin = module:get_option_string("lab_cut_fetch_origin", "component");

module:hook("iq/host/http://jabber.org/protocol/pubsub:pubsub", function (event)
	if times <= 0 or event.stanza.attr.type ~= "get" then return; end
	if event.origin.type ~= origin then return; end
	local items = event.stanza.tags[1]:get_child("items");
	if not items or items.attr.node ~= node then return; end
	times = times - 1;
	module:log("info", "lab_cut_fetch: closing the connection of %s instead of answering its fetch of %s", event.stanza.attr.from, node);
	event.origin.conn:close();
	return true;
end, 100);
