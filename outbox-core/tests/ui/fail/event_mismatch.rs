use outbox_core::{Event, HandlerError, handler};

#[derive(serde::Serialize, serde::Deserialize, Event)]
struct UserInvited {}

// `event` names another type than the parameter's `Event` type.
#[handler(event = "UserDeleted")]
async fn mismatched(_event: UserInvited) -> Result<(), HandlerError> {
    Ok(())
}

fn main() {}
