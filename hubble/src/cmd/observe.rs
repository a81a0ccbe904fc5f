//! `hubble observe`: builds the GetFlows request from the flags and prints the stream.

use crate::{
    cli::{Cli, ObserveArgs},
    error::{Error, Result},
    filters::FilterBuilder,
    format::{Output, PrintOptions, Printer},
    timeparse::parse_time,
};
use lumen_api::observer::GetFlowsRequest;
use std::{io::IsTerminal, time::SystemTime};

/// How many flows a plain `hubble observe` prints.
pub const DEFAULT_LAST: u64 = 20;

/// The GetFlows request for the selection flags and filters (as upstream: `--last 20` when
/// nothing else selects; `--all` is the largest number; `--until` is ignored with
/// `--follow`).
pub fn flows_request(
    a: &ObserveArgs,
    filters: &FilterBuilder,
    now: SystemTime,
) -> Result<GetFlowsRequest> {
    let first = a.first.unwrap_or(0) > 0;
    let last = a.last.unwrap_or(0) > 0;
    let conflict = |x: &str, y: &str| {
        Err(Error::InvalidArgument(format!(
            "cannot set both --{x} and --{y}"
        )))
    };
    if first && last {
        return conflict("first", "last");
    }
    if first && a.all {
        return conflict("first", "all");
    }
    if first && a.follow {
        return conflict("first", "follow");
    }
    if last && a.all {
        return conflict("last", "all");
    }
    let since = a
        .since
        .as_deref()
        .map(|s| parse_time("since", s, now))
        .transpose()?;
    let until = match (&a.until, a.follow) {
        (Some(u), false) => Some(parse_time("until", u, now)?),
        _ => None,
    };
    let mut number = if first {
        a.first.unwrap_or(0)
    } else {
        a.last.unwrap_or(0)
    };
    if since.is_none() && until.is_none() && !first {
        if a.all {
            number = u64::MAX;
        } else if number == 0 && !a.follow {
            number = DEFAULT_LAST;
        }
    }
    Ok(GetFlowsRequest {
        number,
        first,
        follow: a.follow,
        whitelist: filters.whitelist(),
        blacklist: filters.blacklist(),
        since,
        until,
        ..Default::default()
    })
}

/// The print options for the flags; colours when `--color always`, or `auto` on a terminal.
pub fn print_options(a: &ObserveArgs, stdout_is_terminal: bool) -> Result<PrintOptions> {
    let output: Output = a.output.parse()?;
    let color = match a.color.as_str() {
        "always" => true,
        "never" => false,
        _ => stdout_is_terminal,
    };
    Ok(PrintOptions {
        output,
        node_name: a.print_node_name,
        policy_names: a.print_policy_names,
        color: color && matches!(output, Output::Compact | Output::Dict),
    })
}

/// Runs `hubble observe`.
pub async fn run(cli: &Cli, a: &ObserveArgs, filters: &FilterBuilder) -> Result<()> {
    let req = flows_request(a, filters, SystemTime::now())?;
    let opts = print_options(a, std::io::stdout().is_terminal())?;
    let mut client = super::observer(cli).await?;
    let mut stream = client.get_flows(req).await?.into_inner();
    let mut printer = Printer::new(opts, std::io::stdout().lock(), std::io::stderr());
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            msg = stream.message() => match msg? {
                Some(resp) => printer.write(&resp)?,
                None => break,
            },
            // Ctrl-C ends a `--follow` cleanly: what is buffered (a table) is printed.
            _ = &mut interrupted => break,
        }
    }
    printer.finish()
}
