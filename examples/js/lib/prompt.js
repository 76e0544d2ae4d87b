// Turning a conversation into the `prompt` a request carries, ported from
// the Rust SDK (sdk/src/prompt.rs): the shared `api` and `template` params
// decide whether messages go to /v1/chat/completions as they are or to
// /v1/completions as text (optionally in the raw Llama-3 template).

import { WorkloadError, param } from './params.js';
import { llama3ChatText } from './text.js';

/** The `api` and `template` param declarations, with these defaults. */
export function promptFormatParams(defaultApi, defaultTemplate) {
  return [
    param(
      'api',
      'completions sends a text prompt to /v1/completions; chat sends the messages to ' +
        '/v1/chat/completions (the server applies its chat template).',
      defaultApi,
    ),
    param(
      'template',
      'With api=completions: llama3 renders the messages with the raw Llama-3 chat template, ' +
        'none joins their contents with a blank line. Must be left unset with api=chat.',
      defaultTemplate,
    ),
  ];
}

/** The validated `api` and `template` params. */
export class PromptFormat {
  constructor(api, template) {
    this.api = api;
    this.template = template;
  }

  /** Reads the params declared by promptFormatParams(). */
  static fromParams(p) {
    const api = p.getChoice('api', ['completions', 'chat']);
    const template = p.getChoice('template', ['llama3', 'none']);
    if (api === 'chat' && p.isSet('template')) {
      // The server applies its own chat template; a second one would be
      // ignored silently, which hides a misunderstanding.
      throw WorkloadError.invalidConfig(
        'parameter `template` applies only to api=completions; leave it unset with api=chat',
      );
    }
    return new PromptFormat(api, template);
  }

  /** The `prompt` variant for `messages` ({role, content} records). */
  render(messages) {
    if (this.api === 'chat') {
      return { tag: 'chat', val: messages.map((m) => ({ role: m.role, content: m.content })) };
    }
    if (this.template === 'llama3') return { tag: 'text', val: llama3ChatText(messages) };
    return { tag: 'text', val: messages.map((m) => m.content).join('\n\n') };
  }
}
