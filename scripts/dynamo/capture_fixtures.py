#!/usr/bin/env python3
"""Capture wire fixtures from a running Dynamo stack (see stack.sh).

    python scripts/dynamo/capture_fixtures.py main     [OUT_DIR]   # stack started with default MOCKER_ARGS
    python scripts/dynamo/capture_fixtures.py overlong [OUT_DIR]   # stack started with MOCKER_ARGS="--max-model-len 512"

For every fixture NAME.EXT this writes:
  NAME.EXT       the response body exactly as the client sees it (chunked
                 transfer framing removed, nothing else touched)
  NAME.headers   status line + header block exactly as received
  NAME.wire      the complete response as received on the socket (headers +
                 body, chunk framing included), for replaying from a fake server
and records the request that produced it in requests.json.

A plain socket client is used instead of an HTTP library so that no byte is
normalised, re-encoded or merged on the way.

Env: DYNAMO_HTTP_PORT (8000), DYNAMO_SYSTEM_PORT (8081), DYNAMO_MODEL_NAME (tiny-llama).
Model output is random tokens, so re-capturing changes text and timings.
"""

import json
import os
import socket
import sys

HOST = "127.0.0.1"
HTTP_PORT = int(os.environ.get("DYNAMO_HTTP_PORT", "8000"))
SYSTEM_PORT = int(os.environ.get("DYNAMO_SYSTEM_PORT", "8081"))
MODEL = os.environ.get("DYNAMO_MODEL_NAME", "tiny-llama")


def http(port, method, path, body=None, accept="application/json", timeout=60):
    """One request on a fresh keep-alive connection; returns (wire, head, body)."""
    payload = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", "User-Agent: sparkhost-fixture-capture", f"Accept: {accept}"]
    if body is not None:
        req += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    raw_req = ("\r\n".join(req) + "\r\n\r\n").encode() + payload

    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(raw_req)
        buf = bytearray()

        def fill(n_at_least):
            while len(buf) < n_at_least:
                chunk = s.recv(65536)
                if not chunk:
                    raise EOFError(f"connection closed after {len(buf)} bytes")
                buf.extend(chunk)

        def find(sep, start):
            while True:
                i = buf.find(sep, start)
                if i >= 0:
                    return i
                chunk = s.recv(65536)
                if not chunk:
                    raise EOFError("connection closed mid-response")
                buf.extend(chunk)

        end = find(b"\r\n\r\n", 0) + 4
        head = bytes(buf[:end])
        fields = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()

        body_out = bytearray()
        if "chunked" in fields.get("transfer-encoding", "").lower():
            pos = end
            while True:
                eol = find(b"\r\n", pos)
                size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
                pos = eol + 2
                if size == 0:
                    # Trailers (normally none) end with an empty line.
                    while True:
                        eol = find(b"\r\n", pos)
                        line_empty = eol == pos
                        pos = eol + 2
                        if line_empty:
                            break
                    break
                fill(pos + size + 2)
                body_out += buf[pos : pos + size]
                pos += size + 2
            wire = bytes(buf[:pos])
        elif "content-length" in fields:
            n = int(fields["content-length"])
            fill(end + n)
            body_out += buf[end : end + n]
            wire = bytes(buf[: end + n])
        else:
            while chunk := s.recv(65536):
                buf.extend(chunk)
            body_out += buf[end:]
            wire = bytes(buf)
    return wire, head, bytes(body_out), raw_req


class Capture:
    def __init__(self, out):
        self.out = out
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, "requests.json")
        self.requests = json.load(open(path)) if os.path.exists(path) else {}

    def save(self, name, port, method, path, body=None, accept="application/json", note=""):
        wire, head, body_bytes, _ = http(port, method, path, body, accept)
        stem = os.path.splitext(name)[0]
        for fname, data in ((name, body_bytes), (stem + ".headers", head), (stem + ".wire", wire)):
            with open(os.path.join(self.out, fname), "wb") as f:
                f.write(data)
        rec = {"method": method, "path": path, "accept": accept, "note": note}
        if body is not None:
            rec["body"] = body.decode("latin-1") if isinstance(body, bytes) else body
        self.requests[name] = rec
        status = head.split(b"\r\n", 1)[0].decode()
        print(f"{name}: {status} ({len(body_bytes)} bytes)")
        return body_bytes

    def finish(self):
        with open(os.path.join(self.out, "requests.json"), "w") as f:
            json.dump(self.requests, f, indent=2, sort_keys=True)
            f.write("\n")


def long_prompt(n_words, seed):
    import random

    words = ("alpha beta gamma delta kernel buffer token cache block prefix router worker stream "
             "latency request metric sample batch window decode prefill queue engine model").split()
    rng = random.Random(seed)
    return " ".join(rng.choice(words) for _ in range(n_words))


def main_phase(cap):
    c = cap.save
    api = HTTP_PORT
    c("models.json", api, "GET", "/v1/models", note="model list")
    c("completions_stream_usage.sse", api, "POST", "/v1/completions",
      {"model": MODEL, "prompt": "The quick brown fox", "max_tokens": 8, "stream": True,
       "stream_options": {"include_usage": True}, "ignore_eos": True},
      accept="text/event-stream", note="stream with final usage chunk (choices: [])")
    c("completions_stream.sse", api, "POST", "/v1/completions",
      {"model": MODEL, "prompt": "The quick brown fox", "max_tokens": 8, "stream": True, "ignore_eos": True},
      accept="text/event-stream", note="stream without include_usage")
    c("chat_stream_usage.sse", api, "POST", "/v1/chat/completions",
      {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8,
       "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True},
      accept="text/event-stream", note="chat stream with final usage chunk")
    c("completions_unary.json", api, "POST", "/v1/completions",
      {"model": MODEL, "prompt": "The quick brown fox", "max_tokens": 8, "ignore_eos": True})
    c("chat_unary.json", api, "POST", "/v1/chat/completions",
      {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "ignore_eos": True})
    c("error_404_model.json", api, "POST", "/v1/completions",
      {"model": "no-such-model", "prompt": "hi", "max_tokens": 4}, note="unknown model")
    c("error_400_bad.json", api, "POST", "/v1/completions", b'{"model": "' + MODEL.encode() + b'", "prompt": ',
      note="truncated (invalid) JSON body")
    c("error_400_missing_prompt.json", api, "POST", "/v1/completions", {"model": MODEL, "max_tokens": 4},
      note="valid JSON without prompt")
    # Repeat a long prompt so the prefix-cache path shows up in the metrics.
    p = long_prompt(1900, seed=1)
    for i in range(2):
        c(f"completions_cached_{i + 1}.json", api, "POST", "/v1/completions",
          {"model": MODEL, "prompt": p, "max_tokens": 8, "ignore_eos": True},
          note="~3k-token prompt; 2nd request hits the prefix cache (usage.prompt_tokens_details.cached_tokens)")
    c("completions_stream_64.sse", api, "POST", "/v1/completions",
      {"model": MODEL, "prompt": "Count slowly", "max_tokens": 64, "stream": True,
       "stream_options": {"include_usage": True}, "ignore_eos": True},
      accept="text/event-stream", note="64 tokens, feeds the ITL histograms")
    c("frontend_metrics.prom", api, "GET", "/metrics", accept="text/plain", note="after the requests above")
    c("worker_metrics.prom", SYSTEM_PORT, "GET", "/metrics", accept="text/plain", note="after the requests above")


def overlong_phase(cap):
    api = HTTP_PORT
    p = long_prompt(700, seed=2)
    cap.save("overlong_unary_500.json", api, "POST", "/v1/completions",
             {"model": MODEL, "prompt": p, "max_tokens": 8},
             note="mocker --max-model-len 512; prompt > 512 tokens")
    cap.save("overlong_stream_error.sse", api, "POST", "/v1/completions",
             {"model": MODEL, "prompt": p, "max_tokens": 8, "stream": True},
             accept="text/event-stream", note="mocker --max-model-len 512; HTTP 200 then in-stream error")
    cap.save("frontend_metrics_overlong.prom", api, "GET", "/metrics", accept="text/plain",
             note="after the two overlong requests (error counters)")


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("main", "overlong"):
        sys.exit(__doc__)
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(repo, "tests", "fixtures", "dynamo")
    cap = Capture(out)
    (main_phase if sys.argv[1] == "main" else overlong_phase)(cap)
    cap.finish()


if __name__ == "__main__":
    main()
