"""Write the server's settings (phi_lsp/settings.py) into package.json's `phiLsp.*` configuration.

Usage: python scripts/sync-settings.py [--check]   (with the repo's venv python)

The extension's own settings (serverCommand, pythonPath, trace.server) are kept as they are; every
server setting is rewritten from the pydantic model: type, enum, default, bounds, pattern and the
description. `--check` only reports whether package.json is up to date (exit 1 if not);
tests/test_vscode_e2e.py checks the same in the Python test suite.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE.parent))

from pydantic.alias_generators import to_camel  # noqa: E402

from phi_lsp.settings import ENGINE_KEYS, SECTION, wire_schema  # noqa: E402

CLIENT_FIRST = ["serverCommand", "pythonPath"]
CLIENT_LAST = ["trace.server"]
ORDER = {"serverCommand": 0, "pythonPath": 1, "model": 2, "backend": 3, "enable": 4}
# Read only at `initialize`: the extension restarts the server when they change.
INITIALIZE_ONLY = {"completionFallback"}
BOUNDS = ("minimum", "maximum", "minLength", "maxLength", "pattern")


def server_properties() -> dict[str, dict[str, Any]]:
    engine = {to_camel(k) for k in ENGINE_KEYS}
    result: dict[str, dict[str, Any]] = {}
    for name, field in wire_schema().items():
        prop: dict[str, Any] = {"type": field["type"]}
        if "enum" in field:
            prop["enum"] = field["enum"]
        prop["default"] = field.get("default")
        prop.update({k: field[k] for k in BOUNDS if k in field})
        if name in ORDER:
            prop["order"] = ORDER[name]
        description = field.get("description", "").strip()
        if name in engine:
            description += " Changing it loads the model again, in the background."
        if name in INITIALIZE_ONLY:
            description += " Changing it restarts the server."
        prop["markdownDescription"] = description.strip()
        result[f"{SECTION}.{name}"] = prop
    return result


def synced(package: dict[str, Any]) -> dict[str, Any]:
    current = package["contributes"]["configuration"]["properties"]
    client = {f"{SECTION}.{k}": current[f"{SECTION}.{k}"] for k in CLIENT_FIRST + CLIENT_LAST}
    properties = {
        **{k: client[k] for k in list(client)[: len(CLIENT_FIRST)]},
        **server_properties(),
        **{k: client[k] for k in list(client)[len(CLIENT_FIRST) :]},
    }
    package["contributes"]["configuration"]["properties"] = properties
    return package


def main() -> int:
    path = HERE / "package.json"
    text = path.read_text()
    new = json.dumps(synced(json.loads(text)), indent=2, ensure_ascii=False) + "\n"
    if new == text:
        print("package.json settings match phi_lsp/settings.py")
        return 0
    if "--check" in sys.argv:
        print("package.json settings differ from phi_lsp/settings.py: run scripts/sync-settings.py")
        return 1
    path.write_text(new)
    print("package.json settings updated from phi_lsp/settings.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
