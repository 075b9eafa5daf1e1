//! vodfleet-coordinator: the fleet's control plane (docs/ARCHITECTURE.md,
//! docs/design/fleet.md).
//!
//! Stateless replicas: everything lives in Redis, every transition of a task is
//! one atomic script, so any number may run side by side. Each replica consumes
//! commands and worker events, runs the reaper, and serves the HTTP API.

use vodfleet_coordinator::metrics::{RABBITMQ, REDIS};
use vodfleet_coordinator::{api, callback, config, ctx, inbox, intake, lease, metrics, store};

use anyhow::Context as _;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vodfleet_bus::Bus;
use vodfleet_proto::fleet::{COMMANDS_QUEUE, EVENTS_QUEUE};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VODFLEET_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = config::Config::from_env()
        .map_err(anyhow::Error::msg)
        .context("configuration")?;
    if cfg.auth_disabled {
        tracing::warn!("VODFLEET_AUTH_DISABLED is set: the HTTP API accepts unsigned requests (development only)");
    }
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let metrics = Arc::new(metrics::Metrics::new());
    let store = connect_store(&cfg, &metrics, &cancel).await?;
    metrics
        .registry
        .register(Box::new(store.unpipelined()))
        .context("registering the store's metrics")?;
    let callbacks = callback::Callbacks::spawn(
        metrics.clone(),
        cfg.callback_key.clone(),
        cfg.allow_private_networks,
        cfg.callback_attempts,
        cfg.retry_backoff,
        &tracker,
        cancel.clone(),
    );
    let ctx = Arc::new(ctx::Ctx {
        cfg: cfg.clone(),
        store,
        bus: ctx::BusSlot::default(),
        metrics,
        callbacks,
        unsent: Default::default(),
        amqp_beat_ms: Default::default(),
        renewals: tokio::sync::Semaphore::new(lease::RENEWALS_IN_FLIGHT),
    });

    tracker.spawn(supervise_bus(ctx.clone(), tracker.clone(), cancel.clone()));
    tracker.spawn(every(Duration::from_millis(250), cancel.clone(), {
        let ctx = ctx.clone();
        move || {
            let ctx = ctx.clone();
            async move {
                if let Err(e) = lease::reap(&ctx).await {
                    if matches!(e, store::StoreError::Redis(_)) {
                        ctx.metrics.dependency_error(REDIS);
                    }
                    tracing::warn!(error = %e, "reaper pass failed");
                }
            }
        }
    }));
    // Whether Redis answers (the managed connection reconnects by itself, so
    // reachability is asked, not seen at a connect).
    tracker.spawn(every(Duration::from_secs(1), cancel.clone(), {
        let ctx = ctx.clone();
        move || {
            let ctx = ctx.clone();
            async move {
                let ping = tokio::time::timeout(Duration::from_secs(2), ctx.store.ping());
                ctx.metrics.dependency(REDIS, ping.await.unwrap_or(false));
            }
        }
    }));
    tracker.spawn(every(Duration::from_secs(15), cancel.clone(), {
        let ctx = ctx.clone();
        move || {
            let ctx = ctx.clone();
            async move {
                // Entries an older replica still writes to the unsharded indexes
                // during a rolling upgrade (docs/design/fleet.md "Redis").
                let _ = ctx.store.migrate_legacy_indexes().await;
                let _ = lease::count_states(&ctx).await;
            }
        }
    }));

    let listener = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("binding {}", cfg.http_addr))?;
    tracing::info!(addr = %cfg.http_addr, "HTTP API listening");
    let server = axum::serve(listener, api::router(ctx.clone()))
        .with_graceful_shutdown(cancel.clone().cancelled_owned());
    let http = tokio::spawn(async move { server.await });

    wait_for_signal().await;
    tracing::info!("shutting down; a second signal exits at once");
    cancel.cancel();
    tokio::spawn(async {
        wait_for_signal().await;
        std::process::exit(130);
    });
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        tracker.wait().await;
        let _ = http.await;
    })
    .await;
    if let Some(b) = ctx.bus.take().await {
        // Joins lapin's I/O thread, so nothing of it outlives the runtime.
        b.shutdown(Duration::from_secs(2)).await;
    }
    Ok(())
}

/// Connects to Redis (one, or a cluster), retrying until it answers, then
/// moves the unsharded indexes of an older version into the groups.
async fn connect_store(
    cfg: &config::Config,
    metrics: &metrics::Metrics,
    cancel: &CancellationToken,
) -> anyhow::Result<store::Store> {
    let mut delay = Duration::from_millis(200);
    loop {
        match store::Store::open(&cfg.redis_url, cfg.redis_cluster).await {
            Ok(s) => {
                metrics.dependency(REDIS, true);
                tracing::info!(cluster = cfg.redis_cluster, "Redis connected");
                if let Err(e) = s.migrate_legacy_indexes().await {
                    tracing::warn!(error = %e, "moving the unsharded task indexes failed; tried again with the next state count");
                }
                return Ok(s);
            }
            Err(e) => {
                metrics.dependency(REDIS, false);
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Redis unreachable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => anyhow::bail!("stopped before Redis answered"),
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Keeps a RabbitMQ connection: consumes commands and worker events, and
/// reconnects (redeclaring the topology) whenever the connection is lost.
async fn supervise_bus(ctx: Arc<ctx::Ctx>, tracker: TaskTracker, cancel: CancellationToken) {
    loop {
        let Ok(bus) =
            Bus::connect_with_retry(&ctx.cfg.amqp_url, "vodfleet-coordinator", &cancel).await
        else {
            return;
        };
        let bus = Arc::new(bus);
        ctx.bus.set(Some(bus.clone())).await;
        ctx.metrics.dependency(RABBITMQ, true);
        tracing::info!("connected to RabbitMQ; topology declared");
        // Orders that could not go out while the broker was away go out now.
        tracker.spawn({
            let ctx = ctx.clone();
            async move {
                match ctx.reoffer_unsent().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(orders = n, "orders not published during the outage offered again"),
                    Err(e) => tracing::warn!(error = %e, "orders not published during the outage: offering them again failed; their leases will expire and be issued again"),
                }
            }
        });
        let consumers = async {
            let (_c1, mut commands) = bus
                .consume(COMMANDS_QUEUE, "coordinator-commands", 16)
                .await?;
            let cmd_loop = async {
                // Commands for one task are applied in order; different tasks in parallel.
                let lanes: Vec<_> = (0..intake::LANES)
                    .map(|_| {
                        let (tx, mut rx) =
                            tokio::sync::mpsc::channel::<vodfleet_bus::lapin::message::Delivery>(4);
                        let ctx = ctx.clone();
                        tokio::spawn(async move {
                            while let Some(d) = rx.recv().await {
                                intake::handle(&ctx, d).await;
                            }
                        });
                        tx
                    })
                    .collect();
                while let Some(d) = commands.next().await {
                    match d {
                        Ok(d) => {
                            let lane = intake::lane(&d.data);
                            if lanes[lane].send(d).await.is_err() {
                                break;
                            }
                        }
                        Err(e) => return Err::<(), vodfleet_bus::BusError>(e.into()),
                    }
                }
                Ok(())
            };
            // Its own consumer, set up alongside the commands' loop: a queue the broker
            // cannot serve yet (a quorum queue still without a leader after a crash)
            // must not hold back command intake.
            let ev_loop = async {
                let (_c2, mut events) = bus
                    .consume(EVENTS_QUEUE, "coordinator-events", inbox::PREFETCH)
                    .await?;
                // Each worker's messages in order, many workers at once, and a
                // heartbeat superseded by a newer one of its worker while it waits
                // (coordinator/src/inbox.rs, docs/CAPACITY.md).
                let inbox = inbox::for_ctx(ctx.clone());
                while let Some(d) = events.next().await {
                    let d = d.map_err(vodfleet_bus::BusError::from)?;
                    inbox::accept(&ctx, &inbox, d).await;
                }
                Ok::<(), vodfleet_bus::BusError>(())
            };
            tokio::select! {
                r = cmd_loop => r,
                r = ev_loop => r,
            }
        };
        let outcome: Result<(), vodfleet_bus::BusError> = tokio::select! {
            r = consumers => r,
            _ = cancel.cancelled() => return,
        };
        ctx.bus.set(None).await;
        ctx.metrics.dependency(RABBITMQ, false);
        match outcome {
            Ok(()) => tracing::warn!("RabbitMQ consumer ended; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "RabbitMQ connection lost; reconnecting"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `f` every `period` until cancelled.
async fn every<F, Fut>(period: Duration, cancel: CancellationToken, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => f().await,
            _ = cancel.cancelled() => return,
        }
    }
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
