"""Integrations with external systems (today WispHub Net): the lowest layer of wispbot.

Nothing here imports from ``bot`` or ``flows``; they import from here.
"""
