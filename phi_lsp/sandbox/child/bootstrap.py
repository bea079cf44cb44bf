"""The child's `-c` program: load the child modules from source text, then run the prelude.

argv is `-c CONFIG SOURCES`, SOURCES a JSON object {module name: source}, packages ("") first
and each module after those it imports. Each module goes into `sys.modules` under its own name
while the next ones load, so their `from phi_lsp.sandbox.child.x import ...` lines work without
phi_lsp on `sys.path` (the packages get an empty `__path__`: nothing else of phi_lsp can be
imported). Then they leave `sys.modules` and SOURCES leaves `sys.argv`, so that the program
sees what it saw when the prelude was one `-c` script: the standard library only.
Standard library only.
"""

import json
import sys
import types

PRELUDE = "phi_lsp.sandbox.child.prelude"


def load(sources: dict[str, str]) -> dict[str, types.ModuleType]:
    """Each module in order, as if imported, from its text."""
    modules = {}
    for name, source in sources.items():
        module = modules[name] = sys.modules[name] = types.ModuleType(name)
        if not source:
            module.__path__ = []
        exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    for name in modules:
        del sys.modules[name]
    return modules


if __name__ == "__main__":
    load(json.loads(sys.argv.pop()))[PRELUDE].main()
