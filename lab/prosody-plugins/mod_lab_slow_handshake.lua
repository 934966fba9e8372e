-- Plays a server that is busy right after a component authenticates: once
-- Prosody has queued the handshake's answer, this handler keeps its one
-- thread for SECONDS before the answer can leave, as mod_privilege does while
-- it sends every session's presence to a component granted presence
-- permission (18 s at 10,000 sessions on Prosody 13.0.1: docs/benchmarks.md).
-- Loaded on the component's host by the test that checks the component
-- waits for such an answer instead of starting over (tests/slow_server.rs).
local socket = require "socket";

-- Set by the lab's configuration (SLOW_HANDSHAKE in lab/src/prosody.rs).
local SECONDS = assert(module:get_option_number("lab_slow_handshake_seconds"),
	"lab_slow_handshake_seconds is not set");

module:hook("component-authenticated", function ()
	module:log("info", "lab_slow_handshake: holding the server for %d s", SECONDS);
	socket.sleep(SECONDS);
end);
