//! Model discovery: the serving stack registers models asynchronously, so a
//! run waits for `/v1/models` instead of failing on the first empty answer;
//! but an answer that polling cannot change (401, 403, 404) ends the wait
//! at once, naming the URL that was requested.

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::client::Client;
use super::untimed::UntimedError;

#[derive(Deserialize)]
struct ModelList {
    #[serde(default)]
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
    /// vLLM and others: the path or repo the model was loaded from.
    #[serde(default)]
    root: Option<String>,
}

/// A local model directory the endpoint's model (`wanted`, or the first
/// listed) names, by its id or its `root`: one holding a tokenizer.json.
/// `None` when the server is not up, or names nothing local.
pub async fn local_model_dir(client: &Client, wanted: Option<&str>) -> Option<std::path::PathBuf> {
    let (status, body) = client.get("/v1/models").await.ok()?;
    if !status.is_success() {
        return None;
    }
    let list: ModelList = serde_json::from_slice(&body).ok()?;
    let entry = match wanted {
        Some(w) => list.data.into_iter().find(|m| m.id == w)?,
        None => list.data.into_iter().next()?,
    };
    [Some(entry.id), entry.root]
        .into_iter()
        .flatten()
        .map(std::path::PathBuf::from)
        .find(|p| p.join("tokenizer.json").is_file())
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    Unreachable(#[from] UntimedError),
    #[error("GET {url} answered HTTP {status}: {body}{hint}")]
    Status {
        url: String,
        status: u16,
        body: String,
        hint: &'static str,
    },
    #[error("GET {url} returned something that is not a model list: {why}")]
    NotAList { url: String, why: String },
}

impl ListError {
    /// Polling again cannot change this answer: the credentials or the URL
    /// are wrong.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            ListError::Status {
                status: 401 | 403 | 404,
                ..
            }
        )
    }
}

/// What to do about an answer, for the statuses a user can fix.
fn hint(status: u16) -> &'static str {
    match status {
        401 | 403 => {
            " (the server wants credentials: pass --api-key or set OPENAI_API_KEY, or --header 'Name: value')"
        }
        404 => {
            " (--endpoint is the API root, as OpenAI clients take it: http://host:port or http://host:port/v1, with any path prefix before /v1)"
        }
        _ => "",
    }
}

/// The model ids the endpoint lists now.
pub async fn list(client: &Client) -> Result<Vec<String>, ListError> {
    let untimed = client.untimed();
    let url = untimed.url("/v1/models");
    let (status, body) = untimed.get("/v1/models").await?;
    if !(200..300).contains(&status) {
        return Err(ListError::Status {
            url,
            status,
            body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
            hint: hint(status),
        });
    }
    let list: ModelList = serde_json::from_slice(&body).map_err(|e| ListError::NotAList {
        url,
        why: e.to_string(),
    })?;
    Ok(list.data.into_iter().map(|m| m.id).collect())
}

/// Polls until a model is listed (the first one, or `wanted` when given).
/// Needs `consecutive` successful polls in a row, because a registering
/// worker can appear and vanish again. `stop_if_refused`: a refused
/// connection (nothing listens there) ends the wait at once.
pub async fn wait_for_model(
    client: &Client,
    wanted: Option<&str>,
    timeout: Duration,
    poll: Duration,
    consecutive: u32,
    stop_if_refused: bool,
) -> Result<String, String> {
    let start = Instant::now();
    let mut streak = 0;
    let mut last = String::from("no answer yet");
    loop {
        match list(client).await {
            Ok(models) => {
                let found = match wanted {
                    Some(w) => models.iter().find(|m| *m == w).cloned(),
                    None => models.first().cloned(),
                };
                match found {
                    Some(m) => {
                        streak += 1;
                        if streak >= consecutive {
                            return Ok(m);
                        }
                    }
                    None => {
                        streak = 0;
                        last = format!("models listed: {models:?}");
                    }
                }
            }
            Err(e)
                if e.is_final()
                    || (stop_if_refused
                        && matches!(e, ListError::Unreachable(UntimedError::Refused { .. }))) =>
            {
                return Err(e.to_string());
            }
            Err(e) => {
                streak = 0;
                last = e.to_string();
            }
        }
        if start.elapsed() >= timeout {
            let what = wanted.map_or("any model".to_owned(), |w| format!("model {w:?}"));
            return Err(format!(
                "{} did not list {what} within {:.0?} (last: {last})",
                client.untimed().url("/v1/models"),
                timeout
            ));
        }
        tokio::time::sleep(poll).await;
    }
}
