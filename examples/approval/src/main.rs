//! An approval workflow: a `deploy` job waits for a human. Start `weft dev`,
//! then:
//!
//! ```sh
//! cargo run -p weft-example-approval
//! weft submit deploy --lane approval --payload '{"service": "api", "version": "1.4.2"}'
//! ```
//!
//! The first run suspends the execution on the waitpoint `approval` (for at
//! most an hour; then it fails) and prints the approval command, built from
//! the waitpoint's token. Whoever holds the token can approve, without an
//! API token. The signal resumes the execution; the next run reads the
//! approval and completes the deploy.

use serde::Deserialize;
use serde_json::{json, Value};
use weft_sdk::{
    Client, OnTimeout, ResumeWhen, SuspendOutcome, SuspendSpec, TaskContext, WaitpointSpec, Worker,
    WorkerError,
};

/// How long a deploy waits for its approval before it fails: an hour.
const APPROVAL_TIMEOUT_MS: i64 = 3_600_000;

#[derive(Deserialize)]
struct Deploy {
    service: String,
    version: String,
}

async fn deploy(ctx: TaskContext, server: String) -> Result<Value, WorkerError> {
    let deploy: Deploy = ctx.payload_as()?;
    // A resumed run: the approval's payload is here.
    if let Some(approval) = ctx.signal("approval") {
        println!(
            "{}: deploying {} {} (approved: {approval})",
            ctx.execution_id(),
            deploy.service,
            deploy.version
        );
        return Ok(
            json!({ "deployed": deploy.service, "version": deploy.version, "approval": approval }),
        );
    }
    let spec = SuspendSpec {
        waitpoints: vec![WaitpointSpec {
            name: "approval".into(),
            timeout_ms: Some(APPROVAL_TIMEOUT_MS),
            on_timeout: OnTimeout::Fail,
        }],
        resume_when: ResumeWhen::All,
    };
    match ctx.suspend(spec).await? {
        SuspendOutcome::Suspended(waitpoints) => {
            for waitpoint in waitpoints {
                let body = json!({"token": waitpoint.token, "payload": {"approved_by": "you"}});
                println!(
                    "{}: {} {} waits for approval until {}. Approve with:\n  \
                     curl -sS -X POST {server}/v1/signals -H 'Content-Type: application/json' -d '{body}'\n\
                     or:\n  weft signal --token '{}' --payload '{{\"approved_by\": \"you\"}}'",
                    ctx.execution_id(),
                    deploy.service,
                    deploy.version,
                    waitpoint.expires_at,
                    waitpoint.token
                );
            }
            // The attempt is over; nothing is reported for it.
            Err(WorkerError::suspended())
        }
        // Someone approved before the job asked (`weft signal ID --waitpoint
        // approval`): go ahead at once.
        SuspendOutcome::Satisfied(signals) => Ok(
            json!({ "deployed": deploy.service, "version": deploy.version, "approval": signals.get("approval") }),
        ),
    }
}

#[tokio::main]
async fn main() -> weft_core::Result<()> {
    let server = std::env::var("WEFT_SERVER").unwrap_or_else(|_| "http://127.0.0.1:7070".into());
    let client = Client::http(&server)?;
    let base = server.clone();
    let worker = Worker::builder(client.transport().clone())
        .lanes(["approval"])
        .handler("deploy", move |ctx| deploy(ctx, base.clone()))
        .build()?;
    println!("approval worker on lane `approval` of {server}; Ctrl-C to stop");
    let metrics = worker
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    println!("stopped: {metrics:?}");
    Ok(())
}
