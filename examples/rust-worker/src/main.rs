//! A Weft worker in a few lines of Rust. Start `weft dev`, then:
//!
//! ```sh
//! cargo run -p weft-example-rust-worker
//! weft submit greet --lane rust --payload '{"name": "Ada"}'
//! weft submit flaky --lane rust --payload '{}'
//! ```
//!
//! `greet` answers at once; `flaky` fails its first attempt (Weft retries it
//! after the backoff) and succeeds on the second; `refuse` fails for good.
//! Ctrl-C stops claiming and lets running handlers finish.

use serde::Deserialize;
use serde_json::json;
use weft_sdk::{Client, Worker, WorkerError};

#[derive(Deserialize)]
struct Greet {
    name: String,
}

#[tokio::main]
async fn main() -> weft_core::Result<()> {
    let server = std::env::var("WEFT_SERVER").unwrap_or_else(|_| "http://127.0.0.1:7070".into());
    let client = Client::http(&server)?;
    let worker = Worker::builder(client.transport().clone())
        .lanes(["rust"])
        .concurrency(8)
        .handler("greet", |ctx| async move {
            let greet: Greet = ctx.payload_as()?;
            Ok(json!({ "greeting": format!("Hello, {}!", greet.name) }))
        })
        .handler("flaky", |ctx| async move {
            if ctx.attempt() == 1 {
                return Err(WorkerError::new("the first attempt always fails"));
            }
            Ok(json!({ "succeeded_on_attempt": ctx.attempt() }))
        })
        .handler("refuse", |_ctx| async move {
            Err::<serde_json::Value, _>(WorkerError::permanent("this kind is never retried"))
        })
        .build()?;
    println!("worker on lane `rust` of {server}; Ctrl-C to stop");
    let metrics = worker
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    println!("stopped: {metrics:?}");
    Ok(())
}
