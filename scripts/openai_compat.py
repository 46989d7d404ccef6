#!/usr/bin/env python3
"""`signaldesk llm serve` driven by the official `openai` SDK: every check is a real client call
against the real local model over real HTTP on 127.0.0.1.

Run by scripts/test.sh in a venv with scripts/openai-compat-requirements.txt installed:

    python scripts/openai_compat.py --bin target/debug/signaldesk

It starts the server itself (port 0, a queue of 1 so a burst meets 429), runs every check even
after a failure, prints one line per check, and exits 1 if any failed.
"""

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time
from typing import Optional

import urllib.error
import urllib.request

import openai
import pydantic

RESULTS = []


def check(name):
    """Run the decorated function now, as one named check."""

    def run(fn):
        started = time.monotonic()
        try:
            detail = fn() or ""
            RESULTS.append((name, True))
            print(f"ok    {name} ({time.monotonic() - started:.1f}s) {detail}", flush=True)
        except Exception as e:  # every failure is reported, then the next check runs
            RESULTS.append((name, False))
            print(f"FAIL  {name}: {type(e).__name__}: {e}", flush=True)
        return fn

    return run


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def start_server(binary):
    env = dict(os.environ, SIGNALDESK_LLM__SERVE_QUEUE="1", RUST_LOG="warn")
    proc = subprocess.Popen(
        [binary, "llm", "serve", "--addr", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        env=env,
        text=True,
    )
    line = proc.stdout.readline()
    # "signaldesk llm serve: MODEL on http://127.0.0.1:PORT/v1/chat/completions"
    expect("http://" in line, f"the server did not print its address: {line!r}")
    url = line.split(" on ")[1].strip().removesuffix("/chat/completions")
    return proc, url


PROMPT = [{"role": "user", "content": "Write three sentences about the sea."}]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="the signaldesk binary")
    args = ap.parse_args()
    proc, base = start_server(args.bin)
    print(f"openai {openai.__version__} against {base}", flush=True)
    client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=120)
    model = client.models.list().data[0].id
    try:
        run_checks(client, base, model)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    failed = [n for n, ok in RESULTS if not ok]
    print(f"\n{len(RESULTS) - len(failed)}/{len(RESULTS)} OpenAI-compatibility checks passed")
    if failed:
        print("failed: " + ", ".join(failed))
        sys.exit(1)


def run_checks(client, base, model):
    plain = {"model": model, "messages": PROMPT, "max_tokens": 40, "temperature": 0}

    @check("streaming: deltas, a finish_reason, [DONE], the same text as without streaming")
    def _():
        whole = client.chat.completions.create(**plain)
        chunks = list(client.chat.completions.create(**plain, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        expect(len(chunks) > 5, f"only {len(chunks)} chunks")
        expect(all(c.object == "chat.completion.chunk" for c in chunks), "chunk objects")
        expect(text == whole.choices[0].message.content, f"{text!r} != {whole.choices[0].message.content!r}")
        expect(finishes == [whole.choices[0].finish_reason], f"finish reasons {finishes}")
        return f"{len(chunks)} chunks"

    @check("streaming: stream_options.include_usage adds a usage chunk")
    def _():
        chunks = list(
            client.chat.completions.create(**plain, stream=True, stream_options={"include_usage": True})
        )
        last = chunks[-1]
        expect(last.choices == [] and last.usage is not None, f"last chunk {last}")
        expect(last.usage.completion_tokens > 0 and last.usage.prompt_tokens > 0, f"{last.usage}")
        expect(all(c.usage is None for c in chunks[:-1]), "usage only on the last chunk")

    schema = {
        "type": "object",
        "properties": {"topic": {"enum": ["sea", "land", "sky"]}, "mood": {"type": "string", "maxLength": 20}},
        "required": ["topic", "mood"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "tag", "schema": schema, "strict": True}}

    @check("streaming with a json_schema: the streamed text is the constrained JSON")
    def _():
        chunks = list(client.chat.completions.create(**plain, response_format=fmt, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        value = json.loads(text)
        expect(value["topic"] in ("sea", "land", "sky") and len(value["mood"]) <= 20, text)
        whole = client.chat.completions.create(**plain, response_format=fmt)
        expect(whole.choices[0].message.content == text, "same as unstreamed")
        return text

    @check("json_object: every answer is a JSON object")
    def _():
        prompts = [
            "List two fruits.",
            "Describe a cat.",
            "What is the capital of France?",
            "Give me a recipe title and its cooking time.",
        ]
        for p in prompts:
            r = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": p}],
                response_format={"type": "json_object"},
                max_tokens=120,
            )
            content = r.choices[0].message.content
            expect(r.choices[0].finish_reason == "stop", f"{p!r}: finish {r.choices[0].finish_reason}: {content!r}")
            expect(isinstance(json.loads(content), dict), f"{p!r}: {content!r}")
        return f"{len(prompts)}/{len(prompts)}"

    @check("stop: the answer ends before the stop string, finish_reason stop")
    def _():
        long = client.chat.completions.create(**{**plain, "max_tokens": 60}).choices[0].message.content
        words = long.split()
        expect(len(words) > 6, f"answer too short to test stop: {long!r}")
        word = words[5]
        stopped = client.chat.completions.create(**{**plain, "max_tokens": 60}, stop=[word, "\u00a7\u00a7"])
        content = stopped.choices[0].message.content
        expect(word not in content, f"{word!r} in {content!r}")
        expect(long.startswith(content) and len(content) < len(long), f"{content!r} is not a cut of {long!r}")
        expect(stopped.choices[0].finish_reason == "stop", stopped.choices[0].finish_reason)
        streamed = client.chat.completions.create(**{**plain, "max_tokens": 60}, stop=word, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        expect(text == content, f"streamed {text!r} != {content!r}")
        return f"stop={word!r}"

    @check("n: two choices, indexed, sampled with their own seeds")
    def _():
        r = client.chat.completions.create(**{**plain, "temperature": 1.0}, n=2, seed=3)
        expect([c.index for c in r.choices] == [0, 1], f"{r.choices}")
        expect(all(c.message.content for c in r.choices), "both have text")
        expect(r.choices[0].message.content != r.choices[1].message.content, "sampled choices differ")

    @check("developer role, content as text parts, null assistant content")
    def _():
        r = client.chat.completions.create(
            model=model,
            messages=[
                {"role": "developer", "content": "Answer briefly."},
                {"role": "user", "content": [{"type": "text", "text": "Say hello"}, {"type": "text", "text": "to the sea."}]},
                {"role": "assistant", "content": None},
                {"role": "user", "content": "Again."},
            ],
            max_tokens=10,
        )
        expect(r.choices[0].message.content, "an answer")

    class Author(pydantic.BaseModel):
        name: str
        born: Optional[int]

    class Book(pydantic.BaseModel):
        title: str
        subtitle: Optional[str]
        author: Author
        rating: Optional[float] = None

    @check("pydantic parse with Optional fields and a nested model")
    def _():
        r = client.chat.completions.parse(
            model=model,
            messages=[{"role": "user", "content": "Describe a famous novel as JSON."}],
            response_format=Book,
            max_tokens=200,
        )
        book = r.choices[0].message.parsed
        expect(isinstance(book, Book) and isinstance(book.author, Author), f"{r.choices[0].message}")
        return book.model_dump_json()

    # An answer that cannot end before max_tokens: one string of at least 8,000 characters.
    endless = {
        "type": "json_schema",
        "json_schema": {
            "name": "story",
            "schema": {
                "type": "object",
                "properties": {"story": {"type": "string", "minLength": 8000}},
                "required": ["story"],
                "additionalProperties": False,
            },
        },
    }

    @check("cancellation: a client that gives up frees the model at once")
    def _():
        impatient = client.with_options(timeout=2.0)
        try:
            impatient.chat.completions.create(model=model, messages=PROMPT, max_tokens=1500, response_format=endless)
            raise AssertionError("a 1,500-token answer came within 2 s: cannot test cancellation")
        except openai.APITimeoutError:
            pass
        started = time.monotonic()
        r = client.chat.completions.create(model=model, messages=PROMPT, max_tokens=5)
        waited = time.monotonic() - started
        expect(r.choices[0].message.content is not None, "an answer")
        expect(waited < 5.0, f"the next 5-token request waited {waited:.1f}s")
        # The same for a stream abandoned after a few chunks.
        stream = client.chat.completions.create(
            model=model, messages=PROMPT, max_tokens=1500, response_format=endless, stream=True
        )
        for i, _chunk in enumerate(stream):
            if i == 3:
                break
        stream.close()
        started = time.monotonic()
        client.chat.completions.create(model=model, messages=PROMPT, max_tokens=5)
        waited_stream = time.monotonic() - started
        expect(waited_stream < 5.0, f"after an abandoned stream the next request waited {waited_stream:.1f}s")
        return f"next request after {waited:.2f}s (plain), {waited_stream:.2f}s (stream)"

    @check("a burst beyond the queue: 429 with Retry-After, the rest answered")
    def _():
        def one(_):
            try:
                client.chat.completions.create(model=model, messages=PROMPT, max_tokens=30)
                return "ok"
            except openai.RateLimitError as e:
                expect(e.response.headers.get("retry-after") == "1", f"Retry-After {e.response.headers}")
                expect(e.body.get("code") == "overloaded", f"{e.body}")
                return "429"

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(one, range(6)))
        expect("429" in outcomes and "ok" in outcomes, f"{outcomes}")
        return f"{outcomes.count('ok')} answered, {outcomes.count('429')} refused"

    def bad_request(code, param=None, **kw):
        try:
            client.chat.completions.create(**{**plain, **kw})
        except openai.BadRequestError as e:
            expect(e.body.get("code") == code, f"code {e.body}")
            if param:
                expect(e.body.get("param") == param, f"param {e.body}")
            expect(e.body.get("type") == "invalid_request_error", f"type {e.body}")
            return e.body["message"]
        raise AssertionError(f"{kw} was accepted")

    @check("400 with an OpenAI error for out-of-range and unsupported parameters")
    def _():
        bad_request("invalid_request", "temperature", temperature=-1)
        bad_request("invalid_request", "top_p", top_p=0)
        bad_request("invalid_request", "n", n=0)
        bad_request("invalid_request", "max_tokens", max_tokens=0)
        tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
        message = bad_request("unsupported_parameter", "tools", tools=tools)
        expect("tool" in message, message)
        bad_request("unsupported_parameter", "logprobs", logprobs=True)
        bad_request("unknown_parameter", "frobnicate", extra_body={"frobnicate": 1})
        bad_request("unsupported_parameter", "messages[0].content[0]",
                    messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}])
        message = bad_request("invalid_request", "response_format.type", response_format={"type": "xml"})
        expect('"xml"' in message and "Some(" not in message, message)

    @check("context: max_tokens clamped to the room left; a prompt too long is named")
    def _():
        r = client.chat.completions.create(model=model, messages=PROMPT, max_tokens=100000)
        expect(r.choices[0].message.content, "an answer")
        message = bad_request("context_length_exceeded", messages=[{"role": "user", "content": "word " * 9000}])
        expect("prompt is" in message and "tokens" in message, message)

    def http_error(path, data=None):
        request = urllib.request.Request(base + path, data=data, headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                raise AssertionError(f"{path}: {r.status}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())["error"]

    @check("404, 405 and 413 are JSON errors")
    def _():
        status, error = http_error("/nothing-here")
        expect(status == 404 and error["code"] == "not_found", f"{status} {error}")
        status, error = http_error("/chat/completions")
        expect(status == 405 and error["code"] == "method_not_allowed", f"{status} {error}")
        big = json.dumps({"model": model, "messages": [{"role": "user", "content": "x" * (3 * 1024 * 1024)}]})
        status, error = http_error("/chat/completions", big.encode())
        expect(status == 413 and error["code"] == "request_too_large", f"{status} {error}")


if __name__ == "__main__":
    main()
