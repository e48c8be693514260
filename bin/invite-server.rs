#![forbid(unsafe_code)]
//! The `invite-server` binary: all logic lives in the library.

fn main() -> std::process::ExitCode {
    invite_server::cli::main()
}
