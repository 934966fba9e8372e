-- Plays ejabberd before 25.10 giving a pubsub transaction up: the first
-- FAILURES node-owner requests of each kind on each node (create, configure,
-- set affiliations) are answered "Database failure" (internal-server-error, type wait), as
-- ejabberd's mod_pubsub answers one whose Mnesia transaction met another's
-- locks (README, "Configuring ejabberd"). Nothing is done for such a request,
-- so the next one goes through. Loaded on the pubsub component by the tests
-- that check the component asks again (tests/faults.rs).
local st = require "util.stanza";

-- Set by the lab's configuration (BUSY_OWNER_REFUSALS in lab/src/prosody.rs).
local FAILURES = assert(module:get_option_number("lab_busy_owner_failures"),
	"lab_busy_owner_failures is not set");
local OWNER = { create = true, configure = true, affiliations = true };
local answered = {};

local function busy(event)
	local stanza = event.stanza;
	if stanza.attr.type ~= "set" then return end
	local action = stanza.tags[1] and stanza.tags[1].tags[1];
	if not action or not OWNER[action.name] then return end
	local key = action.name .. " " .. tostring(action.attr.node);
	local n = (answered[key] or 0) + 1;
	if n > FAILURES then return end
	answered[key] = n;
	module:log("info", "lab_busy_owner: %s answered with a temporary error (%d of %d)", key, n, FAILURES);
	event.origin.send(st.error_reply(stanza, "wait", "internal-server-error", "Database failure"));
	return true;
end

-- Before mod_pubsub's own handlers (priority 0).
module:hook("iq/host/http://jabber.org/protocol/pubsub:pubsub", busy, 10);
module:hook("iq/host/http://jabber.org/protocol/pubsub#owner:pubsub", busy, 10);
