//! The `prosody` kind: Prosody's own admin shell (mod_admin_shell over
//! mod_admin_socket, core since 0.12), reached on its Unix socket. Accounts
//! are made with `user:create`, so Prosody's user manager hashes the
//! password and any of its storage backends works.
//!
//! The wire protocol (Prosody's util/adminstream.lua): an XML stream in the
//! namespace `xmpp:prosody.im/admin`; each `<repl-input>` holds one line of
//! Lua for the shell, answered by any `<repl-output>` and one
//! `<repl-result>`, whose `type='error'` marks a failure.
//!
//! Every value is sent as a Lua string literal made only of decimal escapes
//! (`"\117\115..."`), so no name or password can end the string or run code
//! inside Prosody, and the XML around it needs no escaping either.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{ProvisionError, Provisioner};
use crate::domain::{AccountName, HostName, Password};

/// Stop reading an answer past this: the shell's answers are a line or two.
const MAX_ANSWER: usize = 64 * 1024;

const STREAM_OPEN: &str = "<?xml version='1.0'?><stream:stream \
    xmlns:stream='http://etherx.jabber.org/streams' xml:lang='en' \
    xmlns='xmpp:prosody.im/admin' version='1.0' id=''>";

#[derive(Debug)]
pub(super) struct Prosody {
    pub(super) socket: PathBuf,
    pub(super) domain: HostName,
    pub(super) timeout: Duration,
}

/// `s` as a Lua string literal of decimal escapes only, e.g. `"\097\098"`.
/// Three digits always, so an escape is never read together with a digit
/// after it.
pub(super) fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 4 + 2);
    out.push('"');
    for b in s.bytes() {
        // Writing to a String cannot fail.
        let _ = write!(out, "\\{b:03}");
    }
    out.push('"');
    out
}

/// How the shell answered one line.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Ok,
    Error(String),
}

/// The answer in `buf`, once a whole `<repl-result>` has arrived.
fn parse_answer(buf: &str) -> Option<Answer> {
    let start = buf.find("<repl-result")?;
    let rest = &buf[start..];
    let tag_end = rest.find('>')?;
    let tag = &rest[..tag_end];
    let is_error = tag.contains("type='error'") || tag.contains("type=\"error\"");
    let text = if tag.ends_with('/') {
        String::new()
    } else {
        let body = &rest[tag_end + 1..];
        let end = body.find("</repl-result>")?;
        unescape(&body[..end])
    };
    Some(if is_error {
        Answer::Error(text)
    } else {
        Answer::Ok
    })
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

impl Prosody {
    fn jid(&self, name: &AccountName) -> String {
        lua_string(&format!("{}@{}", name.as_str(), self.domain.as_str()))
    }

    /// Sends one line of Lua and waits for its result.
    async fn call(&self, line: &str) -> Result<Answer, ProvisionError> {
        let exchange = async {
            let mut sock = UnixStream::connect(&self.socket).await.map_err(|e| {
                ProvisionError::Unavailable(format!(
                    "cannot connect to Prosody's admin socket {}: {e}",
                    self.socket.display()
                ))
            })?;
            let lost = |e: std::io::Error| {
                ProvisionError::Unavailable(format!("Prosody's admin socket failed: {e}"))
            };
            let mut request = String::with_capacity(STREAM_OPEN.len() + line.len() + 32);
            request.push_str(STREAM_OPEN);
            request.push_str("<repl-input>");
            request.push_str(line);
            request.push_str("</repl-input>");
            sock.write_all(request.as_bytes()).await.map_err(lost)?;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = sock.read(&mut chunk).await.map_err(lost)?;
                if n == 0 {
                    return Err(ProvisionError::Unavailable(
                        "Prosody closed the admin socket without an answer".into(),
                    ));
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(answer) = parse_answer(&String::from_utf8_lossy(&buf)) {
                    let _ = sock.write_all(b"</stream:stream>").await;
                    return Ok(answer);
                }
                if buf.len() > MAX_ANSWER {
                    return Err(ProvisionError::Unavailable(
                        "Prosody's answer was too long".into(),
                    ));
                }
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                ProvisionError::Unavailable(format!(
                    "Prosody did not answer within {} s",
                    self.timeout.as_secs()
                ))
            })?
    }

    /// Runs `line` and judges the answer; with `gone_is_done`, "no such
    /// user" counts as done (a deletion of an account already gone).
    async fn run(&self, line: &str, gone_is_done: bool) -> Result<(), ProvisionError> {
        match self.call(line).await? {
            Answer::Ok => Ok(()),
            Answer::Error(text) => judge(&text, gone_is_done),
        }
    }
}

/// What an error answer means. The shell's own parse errors quote the line,
/// which holds the (escaped) password: they are never repeated.
fn judge(text: &str, gone_is_done: bool) -> Result<(), ProvisionError> {
    Err(if text.contains("User exists") {
        ProvisionError::Taken
    } else if text.contains("No such user") {
        if gone_is_done {
            return Ok(());
        }
        ProvisionError::Unavailable("Prosody has no such user".into())
    } else if text.contains("fails SASLprep") {
        // Prosody's SCRAM hashing runs SASLprep (RFC 4013) on the password,
        // which forbids control characters such as a line break.
        ProvisionError::PasswordRefused(
            "the password contains a character XMPP passwords cannot hold \
             (a line break or another control character); choose another"
                .into(),
        )
    } else if text.contains("attempt to call a nil value") {
        // This Prosody's shell lacks the command (user:disable before 0.13).
        ProvisionError::Unsupported
    } else if let Some(said) = text.strip_prefix("Error: ").filter(|t| !t.contains('\\')) {
        ProvisionError::Unavailable(format!("Prosody said: {said}"))
    } else {
        ProvisionError::Unavailable("Prosody refused the command".into())
    })
}

#[async_trait]
impl Provisioner for Prosody {
    async fn create(&self, name: &AccountName, password: &Password) -> Result<(), ProvisionError> {
        let line = format!(
            "user:create({}, {})",
            self.jid(name),
            lua_string(password.expose())
        );
        self.run(&line, false).await
    }

    async fn set_password(
        &self,
        name: &AccountName,
        password: &Password,
    ) -> Result<(), ProvisionError> {
        let line = format!(
            "user:password({}, {})",
            self.jid(name),
            lua_string(password.expose())
        );
        self.run(&line, false).await
    }

    async fn delete(&self, name: &AccountName) -> Result<(), ProvisionError> {
        self.run(&format!("user:delete({})", self.jid(name)), true)
            .await
    }

    async fn disable(&self, name: &AccountName) -> Result<(), ProvisionError> {
        self.run(&format!("user:disable({})", self.jid(name)), false)
            .await
    }

    async fn enable(&self, name: &AccountName) -> Result<(), ProvisionError> {
        self.run(&format!("user:enable({})", self.jid(name)), false)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_of_a_value_is_a_three_digit_decimal_escape() {
        assert_eq!(lua_string("a\"]]\n"), "\"\\097\\034\\093\\093\\010\"");
        for hostile in [
            "\"..os.execute('touch /tmp/x')..\"",
            "]]..os.execute(\"id\")--[[",
            "pass\nword\\\"); os.exit()--",
            "é<&>'",
        ] {
            let lit = lua_string(hostile);
            let inner = &lit[1..lit.len() - 1];
            // Only backslashes and digits: nothing Lua or XML could read as
            // anything but the bytes they stand for.
            assert!(inner.bytes().all(|b| b == b'\\' || b.is_ascii_digit()));
            assert_eq!(inner.len(), hostile.len() * 4);
            let back: Vec<u8> = inner
                .split('\\')
                .skip(1)
                .map(|d| d.parse::<u8>().unwrap())
                .collect();
            assert_eq!(back, hostile.as_bytes());
        }
    }

    #[test]
    fn answers_are_read_from_the_repl_result() {
        let hdr = "<?xml version='1.0'?><stream:stream xmlns='xmpp:prosody.im/admin'>";
        assert_eq!(parse_answer(hdr), None);
        assert_eq!(
            parse_answer(&format!("{hdr}<repl-result>OK: User created</repl-result>")),
            Some(Answer::Ok)
        );
        assert_eq!(
            parse_answer(&format!(
                "{hdr}<repl-result type='error'>Error: User exists</repl-result>"
            )),
            Some(Answer::Error("Error: User exists".into()))
        );
        assert_eq!(
            judge("Error: User exists", false),
            Err(ProvisionError::Taken)
        );
        assert_eq!(judge("Error: No such user", true), Ok(()));
        assert!(matches!(
            judge(
                "Error: Could not create user: password fails SASLprep",
                false
            ),
            Err(ProvisionError::PasswordRefused(_))
        ));
        assert_eq!(
            judge("attempt to call a nil value (method 'disable')", false),
            Err(ProvisionError::Unsupported)
        );
        // A parse error quotes the escaped line: it is not repeated.
        assert_eq!(
            judge("Sorry, I couldn't understand that... near '\\097'", false),
            Err(ProvisionError::Unavailable(
                "Prosody refused the command".into()
            ))
        );
    }
}
