"""Channel adapters: each turns its channel's updates into Inbound and renders Outbound."""
