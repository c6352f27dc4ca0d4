//! Desktop notifications (freedesktop.org Notifications over the D-Bus
//! session bus on Linux, through `notify-rust`'s pure-Rust client). They
//! block for a D-Bus round trip: call them off the UI thread and off async
//! workers (`spawn_blocking`).

/// The desktop could not show a notification.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot show a desktop notification ({0}): is a notification service running on the session bus?"
)]
pub struct NotifyError(#[from] notify_rust::error::Error);

/// Shows a notification from herd with `title` and `body`.
pub fn show(title: &str, body: &str) -> Result<(), NotifyError> {
    notify_rust::Notification::new()
        .appname("herd")
        .summary(title)
        .body(body)
        .icon("herd")
        .show()?;
    Ok(())
}
