//! twlab's integration tests, one binary (as ripgrep does): a module per
//! command or subject, each file of this directory, and the harness they
//! share in `common` (`netns_test!`, `skip`, `wait_until`). One binary links
//! the crate once instead of once per file.
//!
//! Run one module with a filter on its path: `cargo test --test it json::`,
//! `cargo test --test it ss::` (`cargo test --test it` runs them all).
//!
//! All modules' tests run at once, on threads of this one process: a test
//! changes nothing process-wide (no environment variable, working
//! directory, umask, resource limit or signal disposition of its own: the
//! children it spawns get theirs; namespaces are per thread, see
//! `common::in_netns` and `common::private_tmpfs`), names its temporary
//! files after itself, and uses fixed ports only inside a namespace of its
//! own. (The library's load runs, called in-process by `load`, raise the
//! soft RLIMIT_NOFILE to the hard limit, as every `twlab` does for itself:
//! no test reads the soft one.) The one thing shared across
//! namespaces, the kernel's tracepoints, is held apart by address (`events`)
//! or by a lock in `common` (`common::alone_on_the_machine`).

#[macro_use]
mod common;

mod cli;
mod example;
mod layers;

// Network namespaces, sock_diag, tracefs and mount namespaces are Linux;
// elsewhere these modules are left out.
#[cfg(target_os = "linux")]
mod demo;
#[cfg(target_os = "linux")]
mod diag;
#[cfg(target_os = "linux")]
mod docs;
#[cfg(target_os = "linux")]
mod events;
#[cfg(target_os = "linux")]
mod json;
#[cfg(target_os = "linux")]
mod load;
#[cfg(target_os = "linux")]
mod matrix;
#[cfg(target_os = "linux")]
mod outfile;
#[cfg(target_os = "linux")]
mod pairs;
#[cfg(target_os = "linux")]
mod peer;
#[cfg(target_os = "linux")]
mod peer_why;
#[cfg(target_os = "linux")]
mod run;
#[cfg(target_os = "linux")]
mod selfcheck;
#[cfg(target_os = "linux")]
mod ss;
#[cfg(target_os = "linux")]
mod tight_loop;
#[cfg(target_os = "linux")]
mod trace;
#[cfg(target_os = "linux")]
mod why;
