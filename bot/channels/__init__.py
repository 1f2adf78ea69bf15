"""Channel adapters: each turns its channel's updates into Inbound and renders Outbound;
the engine (``bot.engine``) imports none of them and they never import ``integrations``."""
