#!/usr/bin/env python3
"""Reference rendering of a GGUF's own chat template with Jinja2 (what transformers'
apply_chat_template uses), for the Rust renderer's parity test.

Reads the GGUF metadata directly (no gguf package needed), renders the fixed conversation in
tests/fixtures/chat_conversation.json with add_generation_prompt=True, and writes
tests/fixtures/chat_rendered_reference.txt.

Usage: python3 scripts/gguf_chat_reference.py models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import struct
import sys
from pathlib import Path


def read_metadata(path):
    with open(path, "rb") as f:
        def u32():
            return struct.unpack("<I", f.read(4))[0]

        def u64():
            return struct.unpack("<Q", f.read(8))[0]

        def string():
            return f.read(u64()).decode("utf-8")

        scalars = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                   10: "<Q", 11: "<q", 12: "<d"}

        def value(t):
            if t in scalars:
                fmt = scalars[t]
                return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
            if t == 8:
                return string()
            if t == 9:
                inner, n = u32(), u64()
                return [value(inner) for _ in range(n)]
            raise ValueError(f"unknown GGUF value type {t}")

        assert f.read(4) == b"GGUF", "not a GGUF file"
        u32()  # version
        u64()  # tensor count
        n = u64()
        meta = {}
        for _ in range(n):
            key = string()
            meta[key] = value(u32())
        return meta


def main():
    import jinja2

    meta = read_metadata(sys.argv[1])
    root = Path(__file__).resolve().parent.parent
    conversation = json.loads((root / "tests/fixtures/chat_conversation.json").read_text())
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(meta["tokenizer.chat_template"])
    out = template.render(messages=conversation, add_generation_prompt=True)
    (root / "tests/fixtures/chat_rendered_reference.txt").write_text(out)
    print(json.dumps({k: v for k, v in meta.items() if not isinstance(v, list)}, indent=1)[:3000])


if __name__ == "__main__":
    main()
