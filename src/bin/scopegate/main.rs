//! The `scopegate` command line: issue and manage API keys, mint tokens, explain decisions, run the reference gate.
//!
//! Exit codes: 0 success (an allowed `check`), 1 a denied `check`, 2 bad usage or bad input, with one line on
//! stderr naming the flag, file or line at fault.

// Doc comments here are the command's help text, written for people, not rustdoc.
#![allow(clippy::doc_markdown)]

mod check;
mod keys;
mod serve;
mod token;
mod values;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Scoped, need-to-know API authorization.
#[derive(Debug, Parser)]
#[command(name = "scopegate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// API keys in a key store.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// JWT bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Explain the decision a gate file takes for one request (exit 0 allow, 1 deny).
    Check(check::CheckArgs),
    /// Run the reference gate in front of an echo service.
    Serve(serve::ServeArgs),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Sign a short-lived token for a subject, with scopes and an optional network restriction.
    Mint(token::MintArgs),
}

/// Why a command failed, and its exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// Bad usage or bad input: exit 2.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    /// A denied `check`: exit 1, the decision is already printed.
    pub(crate) fn denied() -> Self {
        Failure {
            code: 1,
            message: String::new(),
        }
    }

    /// The server failed while running: exit 1.
    pub(crate) fn runtime(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

/// The gate file at `path`, or a usage error naming the file, line and field.
pub(crate) fn load_gate_file(
    path: &std::path::Path,
) -> Result<scopegate::config::GateFile, Failure> {
    scopegate::config::GateFile::from_path(path).map_err(|e| Failure::usage(e.to_string()))
}

/// The process environment, as a gate file's peppers and key sets are read from it.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            print!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's lines before the usage block name the flag at fault; keep them, on one line.
            let rendered = e.render().to_string();
            let message: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
                .collect();
            eprintln!(
                "scopegate: {}",
                message.join(" ").trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    let outcome = match &cli.command {
        Command::Token(TokenCommand::Mint(args)) => token::mint(args),
        command => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(async {
                match command {
                    Command::Keys(keys) => keys::run(keys).await,
                    Command::Check(args) => check::run(args).await,
                    Command::Serve(args) => serve::run(args).await,
                    Command::Token(_) => Ok(()),
                }
            }),
            Err(e) => Err(Failure::runtime(format!("cannot start the runtime: {e}"))),
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("scopegate: {}", one_line(&failure.message));
            }
            ExitCode::from(failure.code)
        }
    }
}
