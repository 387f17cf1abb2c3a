"""The SMTP front doors: `brandgate serve`, after the queue (content filter) or before it
(proxy). server.py: sessions and the per-message flow; relay.py: the next hop;
client.py: the byte-exact SMTP client the relay uses."""
