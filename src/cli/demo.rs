//! `twlab demo`: arguments (clap) → the library's plan.
// Shim: the clap struct still lives in the library; moving it here is the
// next step.

pub use twlab::demo::DemoArgs;

pub fn run(a: DemoArgs) -> anyhow::Result<u8> {
    twlab::demo::run(&a).map_err(Into::into)
}
