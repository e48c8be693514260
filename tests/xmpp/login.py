#!/usr/bin/python3
"""Logs into an XMPP server with slixmpp (Debian's python3-slixmpp), as a
real client would, to prove an account invite-server provisioned works there.

    login.py JID PORT            (the password is all of stdin, as is)

Connects to 127.0.0.1:PORT without TLS (the tests' throwaway Prosody allows
PLAIN on loopback), authenticates and exits 0 once the session starts, 1 if
authentication fails, 2 on anything else (including the 20 s timeout)."""

import asyncio
import sys

import slixmpp

TIMEOUT = 20


class Login(slixmpp.ClientXMPP):
    def __init__(self, jid, password, done):
        super().__init__(jid, password)
        self.done = done
        # Loopback only: no STARTTLS, PLAIN over the bare stream.
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.enable_plaintext = True
        self["feature_mechanisms"].unencrypted_plain = True
        self.add_event_handler("session_start", self.started)
        self.add_event_handler("failed_all_auth", self.refused)
        self.add_event_handler("disconnected", self.gone)

    def finish(self, code):
        if not self.done.done():
            self.done.set_result(code)

    def started(self, _event):
        self.finish(0)

    def refused(self, _event):
        self.finish(1)

    def gone(self, _event):
        self.finish(2)


async def main():
    jid, port = sys.argv[1], int(sys.argv[2])
    password = sys.stdin.buffer.read().decode("utf-8")
    done = asyncio.get_running_loop().create_future()
    client = Login(jid, password, done)
    client.connect(("127.0.0.1", port))
    try:
        code = await asyncio.wait_for(done, TIMEOUT)
    except asyncio.TimeoutError:
        print("login.py: no answer within %d s" % TIMEOUT, file=sys.stderr)
        code = 2
    client.disconnect()
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
