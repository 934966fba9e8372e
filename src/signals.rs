//! SIGTERM and SIGINT for the commands that run until stopped (`run`,
//! `watch`, and the lab's demo and simulated users).

use std::time::Duration;

/// Returns at the first SIGTERM or SIGINT (Ctrl-C).
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A channel that turns true on SIGTERM/SIGINT (and after `duration`).
pub fn stop_channel(duration: Option<Duration>) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        match duration {
            Some(d) => {
                tokio::select! {
                    _ = wait_for_signal() => tracing::info!("signal received"),
                    _ = tokio::time::sleep(d) => tracing::info!("duration reached"),
                }
            }
            None => {
                wait_for_signal().await;
                tracing::info!("signal received");
            }
        }
        let _ = tx.send(true);
        // Keep the sender (and so the channel) alive for those who wait.
        std::future::pending::<()>().await;
    });
    rx
}
