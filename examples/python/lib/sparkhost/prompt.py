"""Turning a conversation into the ``prompt`` a request carries, ported from
the Rust SDK (sdk/src/prompt.rs): the shared ``api`` and ``template`` params
decide whether messages go to /v1/chat/completions as they are or to
/v1/completions as text (optionally in the raw Llama-3 template)."""

from wit_world.imports import types

from .params import WorkloadError, param
from .text import llama3_chat_text


def message(role: str, content: str) -> types.ChatMessage:
    """A ``chat-message`` record."""
    return types.ChatMessage(role=role, content=content)


def prompt_format_params(default_api: str, default_template: str):
    """The ``api`` and ``template`` param declarations, with these defaults."""
    return [
        param(
            "api",
            "completions sends a text prompt to /v1/completions; chat sends the messages to "
            "/v1/chat/completions (the server applies its chat template).",
            default_api,
        ),
        param(
            "template",
            "With api=completions: llama3 renders the messages with the raw Llama-3 chat "
            "template, none joins their contents with a blank line. Must be left unset with "
            "api=chat.",
            default_template,
        ),
    ]


class PromptFormat:
    """The validated ``api`` and ``template`` params."""

    def __init__(self, api: str, template: str):
        self.api = api
        self.template = template

    @classmethod
    def from_params(cls, p) -> "PromptFormat":
        """Reads the params declared by ``prompt_format_params``."""
        api = p.get_choice("api", ["completions", "chat"])
        template = p.get_choice("template", ["llama3", "none"])
        if api == "chat" and p.is_set("template"):
            # The server applies its own chat template; a second one would be
            # ignored silently, which hides a misunderstanding.
            raise WorkloadError.invalid_config(
                "parameter `template` applies only to api=completions; leave it unset with api=chat"
            )
        return cls(api, template)

    def render(self, messages):
        """The ``Prompt`` for ``messages``."""
        if self.api == "chat":
            return types.Prompt_Chat([message(m.role, m.content) for m in messages])
        if self.template == "llama3":
            return types.Prompt_Text(llama3_chat_text(messages))
        return types.Prompt_Text("\n\n".join(m.content for m in messages))
