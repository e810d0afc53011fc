//! `cargo bench --bench netns`: what one matrix cell costs, and why cells
//! get a TCP established hash of their own.
//!
//! Times, over 300 runs each on one thread: creating a fresh namespace; one
//! sock_diag dump in it; one whole experiment (connect, close, reconnect)
//! in it — first in namespaces that share the host's ehash (the kernel's
//! default), then in namespaces with a private 256-bucket ehash
//! (`netns::enter_fresh_private_ehash`). Needs root; otherwise says why.

use std::time::Instant;
use twlab::experiment::Experiment;
use twlab::netns;
use twlab::scenario;
use twlab::socket::Family;

const N: usize = 300;

fn per_run(label: &str, mut f: impl FnMut()) {
    let t = Instant::now();
    for _ in 0..N {
        f();
    }
    println!(
        "{label:<58} {:>7.3} ms",
        t.elapsed().as_secs_f64() * 1e3 / N as f64
    );
}

fn main() {
    if let Err(why) = netns::can_unshare() {
        println!("netns bench skipped: cannot create network namespaces ({why}); run as root");
        return;
    }
    let x = Experiment::story(Family::V4, 12345, 23456);
    let (c, s) = (
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
    );
    // Each closure runs on this bench's own thread, which moves from one
    // fresh namespace to the next; the host's namespace is never touched.
    std::thread::spawn(move || {
        per_run("fresh namespace (shared ehash)", || {
            netns::enter_fresh(&[]).unwrap()
        });
        per_run("fresh namespace + 1 sock_diag dump (shared ehash)", || {
            netns::enter_fresh(&[]).unwrap();
            twlab::diag::tuple_view(c, s).unwrap();
        });
        per_run("fresh namespace + experiment (shared ehash)", || {
            netns::enter_fresh(&[]).unwrap();
            scenario::run(&x).unwrap();
        });
        per_run("fresh namespace + 1 sock_diag dump (private ehash)", || {
            netns::enter_fresh_private_ehash(&[], 256).unwrap();
            twlab::diag::tuple_view(c, s).unwrap();
        });
        per_run("fresh namespace + experiment (private ehash)", || {
            netns::enter_fresh_private_ehash(&[], 256).unwrap();
            scenario::run(&x).unwrap();
        });
    })
    .join()
    .unwrap();
}
