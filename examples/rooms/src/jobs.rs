//! Background jobs: the seed's `NotificationService` calls, made from tokio tasks outside
//! any request. Each returns, and logs, how many connections its notifications reached.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tidings_protocol::{Level, Notification};
use tidings_server::{PublishError, Tidings};

/// A file uploaded to a project, to process (the seed's Examples 1 and 3).
#[derive(Debug, Clone, Deserialize)]
pub struct Upload {
    /// Who uploaded it (the seed's `current_user`: a real app takes it from its session).
    pub user_id: String,
    /// The file's name.
    pub filename: String,
}

/// How many connections an upload job's notifications reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Reached {
    /// The uploader's connections (`notify_user`).
    pub user: usize,
    /// The connections in the project's room (`notify_channel`); 0 when processing failed.
    pub room: usize,
}

/// Processes an upload, tells the uploader how it went (the seed's Example 3: success or
/// error) and, when it worked, the project's room (Example 2).
pub async fn process_upload(
    tidings: &Tidings,
    project_id: u64,
    upload: &Upload,
) -> Result<Reached, PublishError> {
    let data = json!({ "project_id": project_id, "filename": upload.filename });
    let outcome = process(&upload.filename).await;
    let personal = match &outcome {
        Ok(()) => note(
            Level::Success,
            format!("File '{}' uploaded successfully!", upload.filename),
            data,
        ),
        Err(reason) => note(Level::Error, format!("Processing failed: {reason}"), data),
    };
    let user = tidings.notify_user(&upload.user_id, &personal).await?;
    let room = match outcome {
        Ok(()) => {
            let update = format!("{} added {}", upload.user_id, upload.filename);
            notify_project_update(tidings, project_id, &update).await?
        }
        Err(_) => 0,
    };
    tracing::info!(project_id, user, room, "upload processed");
    Ok(Reached { user, room })
}

/// Notifies everyone in the room `project_{id}` (the seed's Example 2); returns how many
/// connections it reached.
pub async fn notify_project_update(
    tidings: &Tidings,
    project_id: u64,
    message: &str,
) -> Result<usize, PublishError> {
    let room = crate::room_channel(&format!("project_{project_id}"));
    let data = json!({ "project_id": project_id, "action": "project_update" });
    let update = note(Level::Info, message.to_owned(), data);
    let reached = tidings.notify_channel(&room, &update).await?;
    tracing::info!(%room, reached, "room notified");
    Ok(reached)
}

/// Broadcasts a notification to every connection (the seed's `broadcast`, e.g. "System
/// maintenance in 5 minutes"); returns how many it reached.
pub fn announce(tidings: &Tidings, notification: &Notification) -> Result<usize, PublishError> {
    let reached = tidings.broadcast(notification)?;
    tracing::info!(reached, message = %notification.message, "announcement broadcast");
    Ok(reached)
}

/// Stands in for the real work: a moment's wait, and executables are refused.
async fn process(filename: &str) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    if filename.ends_with(".exe") {
        return Err(format!("{filename}: executables are not accepted"));
    }
    Ok(())
}

fn note(level: Level, message: String, data: Value) -> Notification {
    Notification {
        title: None,
        message,
        level,
        data: Some(data),
    }
}
