//! The `command` kind: a program the operator names, run once per change
//! with one JSON object on its stdin. Exit 0 is done, 3 is "the name is
//! taken", anything else (or running past the timeout, when it is killed) is
//! a failure.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::{ProvisionError, Provisioner};
use crate::domain::{AccountName, HostName, Password};

/// The exit status that says the name is taken.
const EXIT_TAKEN: i32 = 3;

#[derive(Debug)]
pub(super) struct Command {
    pub(super) argv: Vec<String>,
    pub(super) host: HostName,
    pub(super) timeout: Duration,
}

/// What the program reads on its stdin.
#[derive(Serialize)]
struct Request<'a> {
    action: &'static str,
    host: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
}

impl Command {
    async fn run(
        &self,
        action: &'static str,
        name: &AccountName,
        password: Option<&Password>,
    ) -> Result<(), ProvisionError> {
        let request = Request {
            action,
            host: self.host.as_str(),
            name: name.as_str(),
            password: password.map(Password::expose),
        };
        // Serialising a struct of strings cannot fail; the error path is kept
        // rather than unwrapped all the same.
        let mut input = serde_json::to_vec(&request)
            .map_err(|e| ProvisionError::Unavailable(format!("cannot encode the request: {e}")))?;
        input.push(b'\n');
        let (program, args) = self
            .argv
            .split_first()
            .ok_or_else(|| ProvisionError::Unavailable("no program configured".into()))?;
        // stdout is not read: a program's output could echo the password.
        // stderr goes to the server's own stderr, for the operator.
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ProvisionError::Unavailable(format!("cannot run {program}: {e}")))?;
        let stdin = child.stdin.take();
        let exchange = async {
            if let Some(mut stdin) = stdin {
                // A program that exits without reading its input is judged by
                // its exit status alone, so a broken pipe is not an error.
                let _ = stdin.write_all(&input).await;
                drop(stdin);
            }
            child.wait().await
        };
        let outcome = tokio::time::timeout(self.timeout, exchange).await;
        let status = match outcome {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => {
                return Err(ProvisionError::Unavailable(format!(
                    "{program} could not be waited for: {e}"
                )))
            }
            Err(_) => {
                // kill_on_drop would do it too; this also reaps the child.
                let _ = child.kill().await;
                return Err(ProvisionError::Unavailable(format!(
                    "{program} did not finish within {} s and was stopped",
                    self.timeout.as_secs()
                )));
            }
        };
        input.fill(0);
        match status.code() {
            Some(0) => Ok(()),
            Some(EXIT_TAKEN) => Err(ProvisionError::Taken),
            _ => Err(ProvisionError::Unavailable(format!(
                "{program} failed: {status}"
            ))),
        }
    }
}

#[async_trait]
impl Provisioner for Command {
    async fn create(&self, name: &AccountName, password: &Password) -> Result<(), ProvisionError> {
        self.run("create", name, Some(password)).await
    }

    async fn set_password(
        &self,
        name: &AccountName,
        password: &Password,
    ) -> Result<(), ProvisionError> {
        self.run("password", name, Some(password)).await
    }

    async fn delete(&self, name: &AccountName) -> Result<(), ProvisionError> {
        self.run("delete", name, None).await
    }

    async fn disable(&self, name: &AccountName) -> Result<(), ProvisionError> {
        self.run("disable", name, None).await
    }

    async fn enable(&self, name: &AccountName) -> Result<(), ProvisionError> {
        self.run("enable", name, None).await
    }
}
