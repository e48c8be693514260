-- Prosody on loopback as the reference peer for invite-server's tests and
-- benchmark. Started by tests/peer/start-prosody, which sets the environment
-- variables read below; nothing listens beyond 127.0.0.1.
local root = assert(os.getenv("PEER_DIR"), "PEER_DIR is not set")
local http_port = tonumber(os.getenv("PEER_HTTP_PORT") or "15280")
local c2s_port = tonumber(os.getenv("PEER_C2S_PORT") or "15222")
run_as_root = true
daemonize = false
pidfile = root.."/prosody.pid"
data_path = root.."/data"
plugin_paths = { "/usr/lib/prosody/modules" }
interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = { c2s_port }
s2s_ports = {}
component_ports = {}
http_ports = { http_port }
http_interfaces = { "127.0.0.1" }
https_ports = {}
https_interfaces = {}
http_default_host = "example.com"
http_external_url = "http://127.0.0.1:"..http_port.."/"
modules_enabled = { "http", "invites", "invites_api", "invites_page", "register", "http_files" }
modules_disabled = { "s2s" }
allow_registration = true
registration_invite_only = true
authentication = "internal_hashed"
storage = "internal"
log = { info = root.."/prosody.log" }
VirtualHost "example.com"
