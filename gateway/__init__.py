"""brandgate's front doors: the SMTP gateway, the command line, archive scanning and replay."""
