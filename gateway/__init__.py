"""brandgate's front doors, one sub-package each, and what they share.

    gateway/smtp/       the SMTP modes: after-queue filter and before-queue proxy (aiosmtpd),
                        the relay to the next hop and its byte-exact SMTP client
    gateway/milter/     the milter (protocol version 6): codec, edits, settings, server
    gateway/archives/   mail archives read as streams: scan in workers, replay, report, tune
    gateway/cli/        the `brandgate` command line: one module per sub-command

Shared by the doors:
    actions.py          the one place that turns a verdict into headers, banner, quarantine
                        or reject (and the stripping of our own incoming fields)
    service.py          a running door's scan pool, quarantine, metrics, reload and drain
    scanpool.py         worker processes with one Engine each; budget.py: their limits
    quarantine.py       the quarantine store;  settings.py: the [gateway] table
    metrics.py, dns.py, version.py
"""
