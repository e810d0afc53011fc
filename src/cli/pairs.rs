//! `twlab pairs`: the two-sockets-on-one-port family, each cell in a fresh
//! namespace, observed beside the model (exit 3 on any mismatch).

use crate::outcome::Exit;
use crate::pairs::{PairResult, Selection, Summary, cells, run};
use anyhow::Result;
use std::io::Write;

/// Arguments of `twlab pairs`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  twlab pairs                 # every cell; figures and any mismatch
  twlab pairs --all           # one line per cell, with Windows and BSD/macOS
  twlab pairs --same-uid --bindv6only 0 --json")]
pub struct PairsArgs {
    /// One line per cell (default: figures, mismatches and the classic table).
    #[arg(long)]
    pub all: bool,
    /// JSON Lines: one object per cell, then the summary.
    #[arg(long)]
    pub json: bool,
    /// Only cells where both sockets have the same uid.
    #[arg(long)]
    pub same_uid: bool,
    /// Only this net.ipv6.bindv6only (default both).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub bindv6only: Option<u8>,
    /// Cells run at once, each on a thread in namespaces of its own (as
    /// matrix and selfcheck -j; --threads is the old spelling).
    #[arg(long, short = 'j', alias = "threads", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
}

fn line(r: &PairResult) -> String {
    let c = &r.case;
    let p = &r.predicted;
    let obs = match &r.observed {
        Ok(o) => format!(
            "{}/{}/{}/{}",
            o.first_bind.short(),
            o.second_bind.short(),
            o.second_listen.short(),
            o.first_listen.short()
        ),
        Err(e) => format!("error: {e}"),
    };
    format!(
        "{} bindv6only={} first [{}] {} | second [{}] | observed {obs} | predicted {}/{}/{}/{} ({}) | windows {} | bsd {}",
        if r.agrees() { "  " } else { "!!" },
        u8::from(c.bindv6only),
        c.first.label(c.bindv6only),
        c.state.name(),
        c.second.label(c.bindv6only),
        p.first_bind.short(),
        p.second_bind.short(),
        p.second_listen.short(),
        p.first_listen.short(),
        p.rule.name(),
        r.windows.second_bind,
        r.bsd.second_bind,
    )
}

fn summary_line(s: &Summary) -> String {
    format!(
        "{} cells in {:.1} s, {} mismatches, {} errors (calls: first bind/second bind/second listen/first's late listen)",
        s.cells,
        s.elapsed.as_secs_f64(),
        s.mismatches,
        s.errors
    )
}

/// The classic table: a listening first socket, no options, same uid,
/// bindv6only 0: the second bind() for each pair of addresses.
fn classic(results: &[PairResult], out: &mut impl Write) -> std::io::Result<()> {
    use crate::model::pairs::FirstState;
    let pick: Vec<&PairResult> = results
        .iter()
        .filter(|r| {
            let c = &r.case;
            c.state == FirstState::Listening
                && !c.bindv6only
                && !c.first.reuseaddr
                && !c.first.reuseport
                && !c.second.reuseaddr
                && !c.second.reuseport
                && c.second.uid == crate::model::pairs::Uid::Same
        })
        .collect();
    if pick.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "second bind() beside a listener, no options, bindv6only=0 (observed; Windows, BSD documented):"
    )?;
    for r in pick {
        let obs = r
            .observed
            .as_ref()
            .map(|o| o.second_bind.short())
            .unwrap_or_else(|e| e.clone());
        writeln!(
            out,
            "  {:<28} then {:<28} → {:<11} windows {:<13} bsd {}",
            r.case.first.label(false),
            r.case.second.label(false),
            obs,
            r.windows.second_bind,
            r.bsd.second_bind
        )?;
    }
    Ok(())
}

/// Run the family; exit 3 on any mismatch.
pub fn run_cmd(a: PairsArgs) -> Result<Exit> {
    // Another uid's socket needs root over that uid; in an ordinary
    // user's user namespace only its own uid is mapped.
    let other_uid = !a.same_uid && crate::sys::fsuid::can_act_as(65534);
    if !a.same_uid && !other_uid {
        eprintln!(
            "twlab: the other-uid cells are left out: this process cannot act as another uid (run as root for them)"
        );
    }
    let sel = Selection {
        other_uid,
        bindv6only: match a.bindv6only {
            Some(0) => &[false],
            Some(_) => &[true],
            None => &[false, true],
        },
    };
    let (results, summary) = run(&cells(sel), usize::from(a.jobs))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        for r in &results {
            writeln!(out, "{}", crate::json::compact_line("cell", r)?)?;
        }
        writeln!(out, "{}", crate::json::compact_line("summary", &summary)?)?;
    } else {
        if a.all {
            for r in &results {
                writeln!(out, "{}", line(r))?;
            }
        } else {
            classic(&results, &mut out)?;
            for r in results.iter().filter(|r| !r.agrees()) {
                writeln!(out, "{}", line(r))?;
                writeln!(out, "     model: {}", r.predicted.explanation)?;
            }
        }
        writeln!(out, "{}", summary_line(&summary))?;
    }
    Ok(Exit::disagreed_if(summary.mismatches > 0))
}
