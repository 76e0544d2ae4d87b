//! Turning a conversation into the [`Prompt`] a request carries.
//!
//! Workloads build a list of [`ChatMessage`]s and let a [`PromptFormat`]
//! (from the shared `api` and `template` params) decide how it goes out:
//! as messages to `/v1/chat/completions`, where the server applies its own
//! chat template, or as raw text to `/v1/completions`, optionally wrapped in
//! the Llama-3 chat template here. Sizing happens before rendering, so a
//! template is never cut or padded.

use crate::text::{LLAMA3_ASSISTANT_HEADER, LLAMA3_BEGIN};
use crate::{ChatMessage, ParamInfo, Params, Prompt, Result, WorkloadError, param};

/// The endpoint requests go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/v1/completions` with a text prompt.
    Completions,
    /// `/v1/chat/completions` with messages.
    Chat,
}

/// How messages become text for `/v1/completions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// The raw Llama-3 chat template ([`llama3_chat_text`]).
    Llama3,
    /// Message contents only, joined by a blank line (`"\n\n"`).
    None,
}

/// The validated `api` and `template` params.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptFormat {
    pub api: Api,
    pub template: Template,
}

impl PromptFormat {
    /// The `api` and `template` param declarations, with these defaults.
    pub fn params(default_api: Api, default_template: Template) -> Vec<ParamInfo> {
        vec![
            param(
                "api",
                "completions sends a text prompt to /v1/completions; chat sends the messages \
                 to /v1/chat/completions (the server applies its chat template).",
                match default_api {
                    Api::Completions => "completions",
                    Api::Chat => "chat",
                },
            ),
            param(
                "template",
                "With api=completions: llama3 renders the messages with the raw Llama-3 chat \
                 template, none joins their contents with a blank line. Must be left unset \
                 with api=chat.",
                match default_template {
                    Template::Llama3 => "llama3",
                    Template::None => "none",
                },
            ),
        ]
    }

    /// Reads the params declared by [`PromptFormat::params`].
    pub fn from_params(p: &Params) -> Result<Self> {
        let api = match p.get_choice("api", &["completions", "chat"])? {
            "completions" => Api::Completions,
            _ => Api::Chat,
        };
        let template = match p.get_choice("template", &["llama3", "none"])? {
            "llama3" => Template::Llama3,
            _ => Template::None,
        };
        if api == Api::Chat && p.is_set("template")? {
            // The server applies its own chat template; a second one would be
            // ignored silently, which hides a misunderstanding.
            return Err(WorkloadError::InvalidConfig(
                "parameter `template` applies only to api=completions; leave it unset with api=chat"
                    .to_string(),
            ));
        }
        Ok(Self { api, template })
    }

    /// The prompt for `messages`.
    pub fn render(&self, messages: &[ChatMessage]) -> Prompt {
        match (self.api, self.template) {
            (Api::Chat, _) => Prompt::Chat(messages.to_vec()),
            (Api::Completions, Template::Llama3) => Prompt::Text(llama3_chat_text(messages)),
            (Api::Completions, Template::None) => Prompt::Text(
                messages
                    .iter()
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>()
                    .join("\n\n"),
            ),
        }
    }
}

/// A [`ChatMessage`] from string slices.
pub fn message(role: &str, content: &str) -> ChatMessage {
    ChatMessage {
        role: role.to_string(),
        content: content.to_string(),
    }
}

/// `messages` in the raw Llama-3 chat template, ready for the assistant:
///
/// ```text
/// <|begin_of_text|>
/// then per message: <|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>
/// then:             <|start_header_id|>assistant<|end_header_id|>\n\n
/// ```
///
/// For a single user message this equals
/// [`llama3_completion_prompt`](crate::text::llama3_completion_prompt).
pub fn llama3_chat_text(messages: &[ChatMessage]) -> String {
    let mut out = String::from(LLAMA3_BEGIN);
    for m in messages {
        out.push_str("<|start_header_id|>");
        out.push_str(&m.role);
        out.push_str("<|end_header_id|>\n\n");
        out.push_str(&m.content);
        out.push_str("<|eot_id|>");
    }
    out.push_str(LLAMA3_ASSISTANT_HEADER);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::llama3_completion_prompt;

    fn format(pairs: &[(&str, &str)]) -> Result<PromptFormat> {
        let declared = PromptFormat::params(Api::Chat, Template::Llama3);
        PromptFormat::from_params(&Params::from_pairs(&declared, pairs)?)
    }

    #[test]
    fn one_user_message_matches_the_completion_template() {
        let m = [message("user", "hello")];
        assert_eq!(llama3_chat_text(&m), llama3_completion_prompt("hello"));
    }

    #[test]
    fn renders_each_api_and_template() {
        let m = [message("system", "S"), message("user", "U")];
        assert_eq!(format(&[]).unwrap().render(&m), Prompt::Chat(m.to_vec()));
        let llama = format(&[("api", "completions")]).unwrap();
        assert_eq!(
            llama.render(&m),
            Prompt::Text(
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>\
                 <|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>\
                 <|start_header_id|>assistant<|end_header_id|>\n\n"
                    .to_string()
            )
        );
        let bare = format(&[("api", "completions"), ("template", "none")]).unwrap();
        assert_eq!(bare.render(&m), Prompt::Text("S\n\nU".to_string()));
    }

    #[test]
    fn template_with_chat_is_refused() {
        assert!(matches!(
            format(&[("template", "none")]),
            Err(WorkloadError::InvalidConfig(_))
        ));
        assert!(matches!(
            format(&[("api", "rest")]),
            Err(WorkloadError::InvalidConfig(_))
        ));
    }
}
