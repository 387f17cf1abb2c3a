"""The milter front door: `brandgate milter`, inside Postfix or Sendmail.
protocol.py: the wire codec (no I/O); edits.py: a verdict as milter modifications;
settings.py: the [gateway.milter] table; server.py: connections and the running milter."""
