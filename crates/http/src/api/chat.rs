//! The chat route, `POST /chat/slack`: Slack cannot send Basic auth, so
//! this route is outside it and checks Slack's signature before anything
//! else, then answers the slash command (shown only to its sender).

use crate::wire::{ErrorBody, SlackAnswer, SlackMessage};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};

use crate::chat::Chat;
use crate::chat::slack::{self, SlashCommand};
use slipway_control::fleet::ControlFleet;

/// The open routes (no Basic auth: the Slack signature instead).
pub fn routes<F: ControlFleet>(chat: Chat<F>) -> Router {
    Router::new()
        .route("/chat/slack", post(slash_command::<F>))
        .with_state(chat)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn slash_command<F: ControlFleet>(
    State(chat): State<Chat<F>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<SlackAnswer>) {
    let secret = match chat.settings.secret.get().await {
        Ok(secret) => secret,
        Err(e) => {
            tracing::error!(error = %e, "the Slack signing secret could not be read");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(SlackAnswer::Refused(ErrorBody {
                    error: "chat is not available right now; try again".into(),
                    code: "unavailable".into(),
                })),
            );
        }
    };
    let verified = slack::verify(
        secret.as_bytes(),
        header(&headers, "x-slack-request-timestamp"),
        header(&headers, "x-slack-signature"),
        &body,
        chrono::Utc::now().timestamp(),
    );
    if let Err(e) = verified {
        tracing::warn!(error = %e, "a chat request was refused");
        return (
            StatusCode::UNAUTHORIZED,
            Json(SlackAnswer::Refused(ErrorBody {
                error: e.to_string(),
                code: "unauthorized".into(),
            })),
        );
    }
    let command = SlashCommand::parse(&body);
    tracing::info!(slack_user = %command.user_id, text = %command.text, "slash command");
    let text = chat.answer(&command).await;
    (
        StatusCode::OK,
        Json(SlackAnswer::Message(SlackMessage {
            response_type: "ephemeral".into(),
            text,
        })),
    )
}
