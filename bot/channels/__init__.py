"""Channel adapters, one package per channel plus ``base`` (what they share): each turns its
channel's updates into Inbound and renders Outbound; none imports the engine, store or service.
"""
