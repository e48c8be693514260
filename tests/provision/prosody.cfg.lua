-- A throwaway Prosody for the prosody provisioner's tests
-- (tests/api/provision_prosody.rs), which set the variables read below.
-- Everything lives in PROVISION_DIR: data, pid file, log and the admin
-- socket invite-server creates accounts through. Clients connect on
-- loopback without TLS, so PLAIN over the bare connection is allowed here
-- and nowhere else.
local root = assert(os.getenv("PROVISION_DIR"), "PROVISION_DIR is not set")
local c2s_port = assert(tonumber(os.getenv("PROVISION_C2S_PORT")), "PROVISION_C2S_PORT is not set")
local domain = assert(os.getenv("PROVISION_DOMAIN"), "PROVISION_DOMAIN is not set")
run_as_root = true
daemonize = false
pidfile = root.."/prosody.pid"
data_path = root.."/data"
admin_socket = root.."/prosody.sock"
interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = { c2s_port }
c2s_interfaces = { "127.0.0.1" }
s2s_ports = {}
component_ports = {}
http_ports = {}
https_ports = {}
modules_enabled = { "admin_socket", "admin_shell", "saslauth", "roster", "disco", "ping" }
modules_disabled = { "s2s", "http", "tls" }
certificates = root
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
storage = "internal"
log = { info = root.."/prosody.log" }
VirtualHost(domain)
