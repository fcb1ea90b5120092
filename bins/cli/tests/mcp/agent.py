"""An MCP client for Tollgate's tests, built on the official Python SDK (`mcp` on PyPI).

It does what an agent's runtime does - connect, list tools, call one - and prints what
it saw as one JSON object on standard output, for the Rust test to check.

    agent.py http URL KEY list-tools
    agent.py http URL KEY call TOOL JSON_ARGS
    agent.py stdio COMMAND [ARG ...] -- list-tools | call TOOL JSON_ARGS

Over stdio the server command inherits this process's environment (TOLLGATE_URL,
TOLLGATE_KEY, TOLLGATE_CONFIG_DIR).
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


def transport(argv):
    kind = argv[0]
    if kind == "http":
        url, key, rest = argv[1], argv[2], argv[3:]
        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=httpx2.Timeout(120.0, connect=10.0),
        )
        return streamable_http_client(url, http_client=http), rest
    if kind == "stdio":
        split = argv.index("--")
        command, args, rest = argv[1], argv[2:split], argv[split + 1:]
        params = StdioServerParameters(command=command, args=args, env=dict(os.environ))
        return params, rest
    raise SystemExit(f"unknown transport {kind}")


async def main(argv):
    server, action = transport(argv)
    progress = []

    async def on_progress(done, total, message):
        progress.append({"progress": done, "total": total, "message": message})

    async with Client(server, read_timeout_seconds=120) as client:
        if action[0] == "list-tools":
            listed = await client.list_tools()
            out = {
                "tools": [
                    {
                        "name": t.name,
                        "description": t.description,
                        "input_schema": t.input_schema,
                        "output_schema": t.output_schema,
                    }
                    for t in listed.tools
                ]
            }
        elif action[0] == "call":
            args = json.loads(action[2]) if len(action) > 2 else {}
            result = await client.call_tool(action[1], args, progress_callback=on_progress)
            out = {
                "is_error": bool(result.is_error),
                "structured": result.structured_content,
                "text": [c.text for c in result.content if getattr(c, "type", "") == "text"],
                "progress": progress,
            }
        else:
            raise SystemExit(f"unknown action {action}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
