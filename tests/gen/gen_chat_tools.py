"""Test-only generator of tests/data/chat_tools/kimi-k2.jsonl (and a check
of the others): as tests/gen/gen_chat_tools.mjs, with Python's jinja2, the
engine transformers renders chat templates with (trim_blocks, lstrip_blocks,
tojson = json.dumps(ensure_ascii=False)), but unsandboxed: Kimi-K2's template
appends to and pops from a list, which @huggingface/jinja cannot run.
    python3 tests/gen/gen_chat_tools.py TEMPLATE.jinja [--args-as-objects] < cases.jsonl > out.jsonl
MK_PEERS defaults to the repository's .peers."""
import json
import os
import sys

import jinja2

repo = os.environ.get("MK_SRC") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
peers = os.environ.get("MK_PEERS") or os.path.join(repo, ".peers")
path = os.path.join(peers, "llama.cpp", "models", "templates", sys.argv[1])
as_objects = "--args-as-objects" in sys.argv


def raise_exception(msg):
    raise jinja2.exceptions.TemplateError(msg)


env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
    x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
env.globals["raise_exception"] = raise_exception
tmpl = env.from_string(open(path, encoding="utf-8").read())
for line in sys.stdin:
    if not line.strip():
        continue
    req = json.loads(line)
    msgs = []
    for m in req["messages"]:
        if m.get("tool_calls") and as_objects:
            m = dict(m, tool_calls=[dict(c, function=dict(c["function"], arguments=json.loads(c["function"]["arguments"])))
                                    for c in m["tool_calls"]])
        msgs.append(m)
    out = tmpl.render(dict(req, messages=msgs, add_generation_prompt=True))
    print(json.dumps({"request": req, "rendered": out}, ensure_ascii=False))
