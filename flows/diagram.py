"""Mermaid state diagrams of the flows (``python -m bot diagram [FLOW]``), from the same tables."""

from __future__ import annotations

import sys
from typing import Any

from transitions.extensions.diagrams import GraphMachine

from flows.registry import FLOW_CLASSES


def _named(callbacks: Any) -> Any:
    """Diagrams show callbacks and conditions by their function names."""
    if isinstance(callbacks, list):
        return [_named(c) for c in callbacks]
    return getattr(callbacks, "__name__", str(callbacks)).replace("<lambda>", "jump")


def mermaid(flow_name: str) -> str:
    """One flow as a Mermaid ``stateDiagram-v2``."""
    for cls in FLOW_CLASSES:
        flow = cls()
        if flow.name != flow_name:
            continue
        table = []
        for row in flow.transitions():
            clean = {k: v for k, v in row.items() if k not in ("before", "after", "prepare")}
            if (
                clean["source"] == "*"
            ):  # entries from other flows: drawn from idle, not from every state
                clean["source"] = "idle"
            for key in ("conditions", "unless"):
                if key in clean:
                    clean[key] = _named(clean[key])
            table.append(clean)

        class Model:
            pass

        graph_model = Model()
        GraphMachine(
            model=graph_model,
            states=[s["name"] for s in flow.states()],
            transitions=table,
            initial="idle",
            auto_transitions=False,
            graph_engine="mermaid",
            title=f"wispbot · {flow.name}",
            show_conditions=True,
        )
        return str(graph_model.get_graph().source)  # type: ignore[attr-defined]
    msg = f"unknown flow {flow_name!r}; flows: {', '.join(c.name for c in FLOW_CLASSES)}"
    raise KeyError(msg)


def print_diagrams(flow: str | None = None) -> int:
    """Print one flow's diagram, or all of them; exit code for the CLI."""
    names = [flow] if flow else [cls.name for cls in FLOW_CLASSES]
    try:
        for name in names:
            print("```mermaid")
            print(mermaid(name))
            print("```")
    except KeyError as err:
        print(f"wispbot: {err.args[0]}", file=sys.stderr)
        return 2
    return 0
