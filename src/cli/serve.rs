//! `prochub serve`: resolves the data folder, opens the store (one server
//! per folder: the store's LOCK), binds, announces the address on stdout
//! and in `DIR/server.json`, and runs until SIGINT/SIGTERM.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;
use crate::model::{SERVER_JSON, ServerInfo};
use crate::server::{ServerConfig, run};
use crate::store::{FileProcessStore, Retention, StoreConfig};

/// How often `--max-age`/`--max-count` pruning runs.
pub const RETENTION_EVERY: Duration = Duration::from_secs(60);

pub async fn serve(args: ServeArgs) -> anyhow::Result<u8> {
    // Regression: an empty token (`--token ""`, or `PROCHUB_TOKEN=` from a
    // variable that was never set) turned auth on with an empty secret
    // that `?access_token=` matched: protection in name only.
    if args.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        anyhow::bail!("--token (PROCHUB_TOKEN) is empty: give a real token, or leave it unset to run without one");
    }
    // First, before the store opens files: the descriptor limit.
    let max_connections = connection_cap(args.max_connections);
    // `--data`, else the one default the client looks in too.
    let dir = args
        .data
        .clone()
        .or_else(crate::client::default_data_dir)
        .context("cannot find the user's data folder; pass --data DIR")?;
    let store = FileProcessStore::open(
        &dir,
        StoreConfig {
            max_output: args.max_output,
            ..Default::default()
        },
    )
    .await?;
    let listener = TcpListener::bind(&args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    write_server_json(&dir, &addr.to_string()).await?;
    if let Err(e) = announce(&addr) {
        remove_server_json(&dir).await;
        return Err(e).context("writing the listening line to stdout");
    }
    tracing::info!(%addr, dir = %dir.display(), "listening");

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let retention = Retention {
        max_age: args.max_age,
        max_count: args.max_count,
    };
    if !retention.is_unlimited() {
        store.spawn_retention(retention, RETENTION_EVERY, shutdown.clone());
    }
    let config = ServerConfig {
        token: args.token.clone(),
        max_body: args.max_body,
        heartbeat: args.heartbeat,
        allow_exec: args.allow_exec,
        cors_origin: args.cors_origin.clone(),
        max_connections,
        runner: None,
        allowed_hosts: args.allowed_hosts.clone(),
        body_timeout: args.body_timeout,
        body_budget: args.body_budget,
        write_stall: args.write_stall,
        head_budget: crate::server::DEFAULT_HEAD_BUDGET,
    };
    let result = run(listener, config, store, shutdown).await;
    remove_server_json(&dir).await;
    result.context("server failed")?;
    Ok(0)
}

/// Raises the descriptor limit and picks the connection cap: `--max-connections`
/// as given (with a warning when it eats into the store's reserve), else
/// the limit minus the reserve. Logs the figures.
fn connection_cap(asked: Option<usize>) -> usize {
    use crate::server::fds;
    let limit = fds::raise_nofile_limit();
    let allowed = fds::max_connections_for(limit);
    let cap = asked.unwrap_or(allowed);
    tracing::info!(
        nofile = limit,
        reserve = fds::reserve_for(limit),
        max_connections = cap,
        "descriptor limit and connection cap"
    );
    if cap > allowed {
        tracing::warn!(
            max_connections = cap,
            nofile = limit,
            "--max-connections leaves fewer than the reserve of descriptors for the store; \
             at the cap, writes may fail with too many open files"
        );
    }
    cap
}

/// The first stdout line, flushed at once: scripts and tests wait for it.
fn announce(addr: &std::net::SocketAddr) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "prochub listening on http://{addr}")?;
    out.flush()
}

/// Cancels `token` at the first SIGINT or SIGTERM.
async fn cancel_on_signal(token: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(%e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
    token.cancel();
}

/// Writes `DIR/server.json` `{pid, addr, started_at}` with the one durable
/// write, so a client never reads half of it.
async fn write_server_json(dir: &Path, addr: &str) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(&ServerInfo::current(addr.to_owned())).expect("ServerInfo serialises");
    bytes.push(b'\n');
    let path = dir.join(SERVER_JSON);
    let written = tokio::task::spawn_blocking(move || crate::durable::write(&path, &bytes, None))
        .await
        .context("writing server.json")?;
    match written {
        // A full or read-only disk: serve anyway (reads still work); only
        // discovery through server.json is lost, clients need --server.
        Err(e) if crate::store::Fault::of(&e.source).is_some_and(crate::store::Fault::is_disk) => {
            tracing::warn!(%e, "cannot write server.json; serving without it (clients need --server or PROCHUB_URL)");
            Ok(())
        }
        other => Ok(other?),
    }
}

/// Removes `server.json` if it still names this process.
async fn remove_server_json(dir: &Path) {
    let dir = dir.to_owned();
    let _ = tokio::task::spawn_blocking(move || {
        let ours = matches!(crate::client::read_server_info(&dir), Ok(Some(info)) if info.pid == std::process::id());
        let path = dir.join(SERVER_JSON);
        if ours && let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(%e, path = %path.display(), "could not remove server.json");
        }
    })
    .await;
}
