//! `twlab client`: arguments (clap) → the library's plan.
// Shim: the clap struct still lives in the library; moving it here is the
// next step.

pub use twlab::peer::client::ClientArgs;

pub fn run(a: ClientArgs) -> anyhow::Result<u8> {
    twlab::peer::client::run(&a).map_err(Into::into)
}
